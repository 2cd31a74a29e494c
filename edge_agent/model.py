"""A model as the agent holds it: its manifest, verified artifact and backend."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from edge_agent.backends import BACKENDS, FloatArray, InferenceBackend, artifact_for
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


SHAPE_PRESERVING_STEPS = frozenset({"znorm", "scale"})


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

    def probe_window(self) -> list[float]:
        """A window of plain values that the model takes, for self-tests and timing.

        Its length is the raw window's (``window_size``), except where preprocessing keeps the shape
        (``znorm``, ``scale``) and the input has several channels or rows: then the model reads them all, one
        after the other (``shape`` without the batch)."""
        spec = self.manifest.input
        size = spec.window_size
        keeps_shape = all(step.op in SHAPE_PRESERVING_STEPS for step in spec.preprocessing)
        if keeps_shape and all(dim is not None for dim in spec.shape[1:]):
            size = int(np.prod([dim for dim in spec.shape[1:] if dim is not None]))
        return [float(i % 7) for i in range(size)]

    def prepare(self, windows: Sequence[Sequence[float]]) -> FloatArray:
        """Raw windows → the graph's input batch (the manifest's preprocessing, then its shape)."""
        try:
            batch = preprocess(np.asarray(windows, dtype=np.float64), self.manifest.input.preprocessing)
        except PreprocessingError as exc:
            raise InferenceError(f"a window cannot be preprocessed for {self.manifest.name}: {exc}") from exc
        shape = [len(windows)] + [dim if dim is not None else -1 for dim in self.manifest.input.shape[1:]]
        try:
            batch = batch.reshape(shape)
        except ValueError as exc:
            raise InferenceError(
                f"{self.manifest.name} takes inputs of shape {self.manifest.input.shape}; "
                f"a window of {len(windows[0]) if windows else 0} values does not fit"
            ) from exc
        return batch

    def infer(self, windows: Sequence[Sequence[float]]) -> list[Outcome]:
        """Preprocess and run a batch of raw windows; one outcome per window."""
        output = self.backend.run(self.prepare(windows))
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


@dataclass(frozen=True, slots=True)
class VariantTiming:
    """One edge variant of a task, as measured on this device."""

    manifest_path: Path
    name: str
    milliseconds: float | None
    """Median time of one window; None when the variant cannot run here (``reason``)."""
    reason: str = ""


def _median_ms(model: LoadedModel, repeats: int) -> float:
    # The graph alone: preprocessing is the same for every variant of a task (the same input spec).
    batch = model.prepare([model.probe_window()])
    model.backend.run(batch)  # warm-up: the first run allocates
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.backend.run(batch)
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def sibling_variants(manifest_path: Path) -> list[Path]:
    """The edge manifests beside ``manifest_path`` that do the same task on the same input (itself first).

    A build writes every variant of a task into one directory (``<task>_edge_int8``, ``<task>_edge_fp32``);
    where int8 is slower on a CPU than fp32, as with small networks on x86_64, the fp32 variant is the one
    to run."""
    configured = read_manifest(manifest_path)
    siblings = [manifest_path]
    for path in sorted(manifest_path.parent.glob("*.manifest.json")):
        if path.resolve() == manifest_path.resolve():
            continue
        try:
            other = read_manifest(path)
        except ModelLoadError:
            continue
        if other.role == "edge" and other.task == configured.task and other.input == configured.input:
            siblings.append(path)
    return siblings


def load_fastest_variant(
    manifest_path: Path,
    *,
    backend: str = "onnxruntime",
    threads: int = 1,
    trusted_keys: Sequence[PublicKey] = (),
    repeats: int = 50,
) -> tuple[LoadedModel, list[VariantTiming]]:
    """Load each edge variant of the configured model's task, time it here, and keep the fastest.

    The configured model must load (its errors are raised as by :func:`load_model`); a sibling that does
    not load (unsigned, no artifact for ``backend``) is left out with its reason. Returns the model and
    every variant's timing, for the log and ``/health``."""
    chosen = load_model(manifest_path, backend=backend, threads=threads, trusted_keys=trusted_keys)
    best = _median_ms(chosen, repeats)
    timings = [VariantTiming(manifest_path, chosen.manifest.name, best)]
    for path in sibling_variants(manifest_path)[1:]:
        try:
            candidate = load_model(path, backend=backend, threads=threads, trusted_keys=trusted_keys)
            milliseconds = _median_ms(candidate, repeats)
        except (ModelLoadError, InferenceError) as exc:
            timings.append(VariantTiming(path, path.name.removesuffix(".manifest.json"), None, str(exc)))
            continue
        timings.append(VariantTiming(path, candidate.manifest.name, milliseconds))
        if milliseconds < best:
            chosen, best = candidate, milliseconds
    return chosen, timings
