"""Reference implementation of the manifest's preprocessing steps (pure computation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocol.manifest import PreprocessStep, Scale, ZNormalize


def preprocess(windows: npt.ArrayLike, steps: Sequence[PreprocessStep]) -> npt.NDArray[np.float32]:
    """Apply ``steps`` to a batch of windows, shape ``[batch, window]``; returns float32."""
    data = np.asarray(windows, dtype=np.float64)
    if data.ndim == 1:
        data = data[np.newaxis, :]
    for step in steps:
        if isinstance(step, ZNormalize):
            mean = data.mean(axis=-1, keepdims=True)
            std = data.std(axis=-1, keepdims=True)
            data = (data - mean) / (std + step.epsilon)
        elif isinstance(step, Scale):
            data = (data - step.offset) * step.factor
    return data.astype(np.float32)
