"""A model as the agent holds it: its manifest, verified artifact and backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from edge_agent.backends import BACKENDS, InferenceBackend, artifact_for
from edge_agent.errors import InferenceError, ModelLoadError
from protocol.ed25519 import PublicKey
from protocol.manifest import ModelManifest
from protocol.messages import Outcome
from protocol.preprocessing import PreprocessingError, preprocess
from protocol.signing import SignatureError, load_public_key, verify


def read_manifest(path: Path) -> ModelManifest:
    try:
        return ModelManifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read model manifest {path}: {exc}") from exc
    except ValidationError as exc:
        raise ModelLoadError(f"model manifest {path} is invalid: {exc}") from exc


@dataclass(frozen=True, slots=True)
class LoadedModel:
    manifest: ModelManifest
    backend: InferenceBackend

    @property
    def window_size(self) -> int:
        return self.manifest.input.window_size

    @property
    def hop(self) -> int:
        return self.manifest.input.hop

    def infer(self, windows: Sequence[Sequence[float]]) -> list[Outcome]:
        """Preprocess and run a batch of raw windows; one outcome per window."""
        try:
            batch = preprocess(np.asarray(windows, dtype=np.float64), self.manifest.input.preprocessing)
        except PreprocessingError as exc:
            raise InferenceError(f"a window cannot be preprocessed for {self.manifest.name}: {exc}") from exc
        shape = [len(windows)] + [dim if dim is not None else -1 for dim in self.manifest.input.shape[1:]]
        output = self.backend.run(batch.reshape(shape))
        labels = self.manifest.output.labels
        outcomes = []
        for probabilities, score in zip(output.probabilities, output.anomaly_scores, strict=True):
            best = int(np.argmax(probabilities))
            outcomes.append(
                Outcome(
                    model=self.manifest.name,
                    model_version=self.manifest.version,
                    label=labels[best],
                    confidence=float(np.clip(probabilities[best], 0.0, 1.0)),
                    anomaly_score=max(0.0, float(score)),
                    probabilities=[float(np.clip(p, 0.0, 1.0)) for p in probabilities],
                )
            )
        return outcomes


def read_trusted_keys(paths: Sequence[Path]) -> list[PublicKey]:
    """The fleet's model-signing public keys (PEM files)."""
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except (OSError, SignatureError) as exc:
            raise ModelLoadError(f"cannot read trusted model key {path}: {exc}") from exc
    return keys


def load_model(
    manifest_path: Path,
    *,
    backend: str = "onnxruntime",
    threads: int = 1,
    trusted_keys: Sequence[PublicKey] = (),
) -> LoadedModel:
    """Load the artifact beside ``manifest_path``; refuse it if its sha256 differs from the manifest's,
    or, when ``trusted_keys`` are given, if none of them signed the manifest."""
    manifest = read_manifest(manifest_path)
    if trusted_keys:
        try:
            verify(manifest, list(trusted_keys))
        except SignatureError as exc:
            raise ModelLoadError(f"refusing {manifest_path}: {exc}") from exc
    factory = BACKENDS.get(backend)
    if factory is None:
        raise ModelLoadError(f"unknown inference backend {backend!r}; known: {', '.join(sorted(BACKENDS))}")
    artifact = artifact_for(backend, manifest_path.parent, manifest)
    return LoadedModel(manifest=manifest, backend=factory(artifact, manifest, threads))
