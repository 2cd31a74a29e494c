"""Handing a new global model to the hub's model registry (which stages its rollout).

The registry and its staged rollouts belong to the hub's core; the coordinator calls one method,
``ModelRegistry.register(artifact, manifest)``, with the quantized file and its signed manifest.
:class:`HubApiModelRegistry` uploads them to the hub's REST API (``POST /api/v1/models``, which checks the
signature against the hub's trusted keys and keeps the model for staged rollouts);
:class:`DirectoryModelRegistry` drops both files into a directory (for a SuperLink host without the hub,
or an operator who uploads by hand); :class:`InMemoryModelRegistry` serves tests.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cloud_hub.fl.errors import ModelBuildError
from cloud_hub.fl.global_model import BuiltModel
from protocol.manifest import ModelManifest


class ModelRegistry(Protocol):
    anchors_models: bool
    """True when the registry anchors each model's sha256 on chain itself (the hub's does)."""

    def register(self, artifact: Path, manifest: ModelManifest) -> Any:
        """Store a signed model and its manifest; the registry decides how it rolls out."""
        ...


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    version: str
    sha256: str
    location: str


class InMemoryModelRegistry:
    anchors_models = False

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], tuple[bytes, ModelManifest]] = {}

    def register(self, artifact: Path, manifest: ModelManifest) -> Registration:
        key = (manifest.name, manifest.version)
        if key in self.models:
            raise ModelBuildError(f"model {manifest.name} {manifest.version} is registered already")
        self.models[key] = (artifact.read_bytes(), manifest)
        return Registration(
            manifest.name, manifest.version, manifest.sha256, f"memory:{manifest.name}/{manifest.version}"
        )


class DirectoryModelRegistry:
    """``<directory>/<name>/<version>/`` with the artifact and ``<name>.manifest.json``."""

    anchors_models = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def register(self, artifact: Path, manifest: ModelManifest) -> Registration:
        target = self.directory / manifest.name / manifest.version
        if target.exists():
            raise ModelBuildError(f"model {manifest.name} {manifest.version} is registered already at {target}")
        target.mkdir(parents=True)
        shutil.copyfile(artifact, target / manifest.artifact)
        (target / f"{manifest.name}.manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
        return Registration(manifest.name, manifest.version, manifest.sha256, str(target))


class HubApiModelRegistry:
    """The hub's model registry over its REST API, with an API token of the ``models`` scope."""

    anchors_models = True

    def __init__(self, base_url: str, token: str, *, client: Any = None, timeout_s: float = 30.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._client = client if client is not None else httpx.Client(timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"}

    def register(self, artifact: Path, manifest: ModelManifest) -> Registration:
        import httpx

        body = {
            "manifest": manifest.model_dump(mode="json"),
            "artifact_base64": base64.b64encode(artifact.read_bytes()).decode(),
        }
        try:
            response = self._client.post(f"{self.base_url}/api/v1/models", json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ModelBuildError(f"cannot reach the hub at {self.base_url}: {exc}") from exc
        if response.status_code not in (200, 201):
            raise ModelBuildError(
                f"the hub refused model {manifest.name} {manifest.version}: {response.status_code} {response.text}"
            )
        location = f"{self.base_url}/api/v1/models/{manifest.name}/{manifest.version}"
        return Registration(manifest.name, manifest.version, manifest.sha256, location)


def publish_global_model(built: BuiltModel, registry: ModelRegistry) -> Any:
    """Hand the quantized artifact and its signed manifest to the registry; returns its registration."""
    if built.manifest.signature is None:
        raise ModelBuildError(
            f"model {built.manifest.name} {built.manifest.version} is not signed; the fleet loads signed models only"
        )
    return registry.register(built.artifact, built.manifest)
