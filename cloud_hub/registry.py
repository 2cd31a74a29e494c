"""The model registry: artifacts with their manifests (and cards), checked before they are kept.

An upload is kept only if the artifact has the size and sha256 its manifest states and the manifest
carries an Ed25519 signature (:mod:`protocol.signing`) by one of the hub's trusted keys. A demo hub
with no trusted keys accepts unsigned models; any other hub refuses them. Uploading the same name
and version again is accepted when the bytes are the same (a retried upload) and refused otherwise.

Artifacts live in the database beside their manifests, so every hub worker serves every model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import defer

from cloud_hub.errors import ConflictError, HubStartupError, ModelRejectedError, NotFoundError
from cloud_hub.store import ModelVersion, Page, Store, utc_now
from protocol.manifest import ModelManifest
from protocol.signing import SignatureError, load_public_key, verify


def read_trusted_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    """The public keys in ``paths`` (PEM); :class:`HubStartupError` if one cannot be read."""
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as exc:
            raise HubStartupError(f"cannot read trusted model key {path}: {exc.strerror or exc}") from exc
        except SignatureError as exc:
            raise HubStartupError(f"trusted model key {path}: {exc}") from exc
    return keys


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    version: str
    sha256: str
    data: bytes


class ModelRegistry:
    """Upload, list, describe and download model versions."""

    def __init__(
        self,
        store: Store,
        *,
        trusted_keys: list[Ed25519PublicKey],
        allow_unsigned: bool = False,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._store = store
        self._keys = trusted_keys
        self._allow_unsigned = allow_unsigned and not trusted_keys
        self._max_bytes = max_bytes

    def check(self, manifest: ModelManifest, artifact: bytes) -> None:
        """Raise :class:`ModelRejectedError` unless ``artifact`` is what ``manifest`` describes, signed."""
        label = f"model {manifest.name} {manifest.version}"
        if len(artifact) > self._max_bytes:
            raise ModelRejectedError(f"{label}: {len(artifact)} bytes is more than the hub takes ({self._max_bytes})")
        if len(artifact) != manifest.bytes:
            raise ModelRejectedError(
                f"{label}: the artifact has {len(artifact)} bytes, its manifest says {manifest.bytes}"
            )
        digest = hashlib.sha256(artifact).hexdigest()
        if digest != manifest.sha256:
            raise ModelRejectedError(f"{label}: the artifact's sha256 is {digest}, its manifest says {manifest.sha256}")
        if self._allow_unsigned and manifest.signature is None:
            return
        if not self._keys:
            raise ModelRejectedError(
                f"{label}: the hub has no trusted model keys (trusted_model_keys), so it takes none"
            )
        try:
            verify(manifest, self._keys)
        except SignatureError as exc:
            raise ModelRejectedError(str(exc)) from exc

    async def upload(
        self, manifest: ModelManifest, artifact: bytes, *, card: dict[str, Any] | None = None, uploaded_by: int | None
    ) -> tuple[ModelVersion, bool]:
        """Check and keep a model; return it and whether it is new (``False``: the same upload again)."""
        self.check(manifest, artifact)
        async with self._store.transaction("store a model") as session:
            existing = await session.scalar(
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .where(ModelVersion.name == manifest.name, ModelVersion.version == manifest.version)
            )
            if existing is not None:
                if existing.sha256 != manifest.sha256:
                    raise ConflictError(
                        f"model {manifest.name} {manifest.version} is already registered with other bytes "
                        f"(sha256 {existing.sha256}); give the new model a new version"
                    )
                return existing, False
            row = ModelVersion(
                name=manifest.name,
                version=manifest.version,
                role=manifest.role,
                task=manifest.task,
                sha256=manifest.sha256,
                size_bytes=manifest.bytes,
                manifest=manifest.model_dump(mode="json"),
                card=card,
                artifact=artifact,
                uploaded_at=utc_now(),
                uploaded_by=uploaded_by,
            )
            session.add(row)
            await session.flush()
        return row, True

    async def list(self, *, name: str | None = None, limit: int = 100, offset: int = 0) -> Page[ModelVersion]:
        conditions = [ModelVersion.name == name] if name is not None else []
        async with self._store.transaction("list models") as session:
            rows = await session.scalars(
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .where(*conditions)
                .order_by(ModelVersion.name, ModelVersion.uploaded_at.desc(), ModelVersion.id.desc())
                .limit(limit)
                .offset(offset)
            )
            total = await session.scalar(select(func.count()).select_from(ModelVersion).where(*conditions))
            return Page(items=list(rows), total=total or 0)

    async def get(self, name: str, version: str) -> ModelVersion:
        """The model version without its artifact; :class:`NotFoundError` if it is not registered."""
        async with self._store.transaction("read a model") as session:
            row = await session.scalar(
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .where(ModelVersion.name == name, ModelVersion.version == version)
            )
        if row is None:
            raise NotFoundError(f"model {name!r} version {version!r} is not in the registry")
        return row

    async def artifact(self, name: str, version: str) -> Artifact:
        async with self._store.transaction("read a model artifact") as session:
            row = (
                await session.execute(
                    select(ModelVersion.sha256, ModelVersion.artifact).where(
                        ModelVersion.name == name, ModelVersion.version == version
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(f"model {name!r} version {version!r} is not in the registry")
        return Artifact(name=name, version=version, sha256=row[0], data=bytes(row[1]))
