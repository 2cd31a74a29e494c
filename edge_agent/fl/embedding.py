"""Embeddings of labelled windows by the frozen int8 backbone (ONNX Runtime), and an in-memory double."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.fl.errors import TrainingError
from protocol.updates import EMBEDDING_STANDARDIZED_KEY

FloatArray = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Maps preprocessed windows ``[n, samples]`` to embeddings ``[n, features]``."""

    features: int
    standardized: bool
    """The embedding is standardized for the whole fleet already (devices then train on it as it is)."""

    def embed(self, windows: FloatArray) -> FloatArray: ...


class OnnxEmbedder:
    """The backbone file (input ``window``, output ``embedding``) on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, *, sha256: str | None = None, threads: int = 1, batch: int = 256) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise TrainingError(f"backbone {path} is missing")
        if sha256 is not None and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise TrainingError(f"backbone {path} does not match its sha256 {sha256}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        output = self._session.get_outputs()[0]
        if output.name != "embedding":
            raise TrainingError(f"backbone {path} outputs {output.name!r}, not 'embedding'")
        self.features = int(output.shape[1])
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.standardized = metadata.get(EMBEDDING_STANDARDIZED_KEY, "false") == "true"
        self._batch = batch

    def embed(self, windows: FloatArray) -> FloatArray:
        if len(windows) == 0:
            return np.zeros((0, self.features), dtype=np.float32)
        parts = [
            self._session.run(["embedding"], {"window": np.ascontiguousarray(windows[i : i + self._batch])})[0]
            for i in range(0, len(windows), self._batch)
        ]
        return np.concatenate(parts).astype(np.float32)


class FixedEmbedder:
    """Unit-test double: a fixed random projection followed by ReLU."""

    def __init__(self, samples: int, features: int, *, seed: int = 0, standardized: bool = False) -> None:
        self.features = features
        self.standardized = standardized
        self._projection = np.random.default_rng(seed).normal(size=(samples, features)).astype(np.float32)

    def embed(self, windows: FloatArray) -> FloatArray:
        features: FloatArray = np.maximum(windows @ self._projection, 0.0).astype(np.float32)
        return features
