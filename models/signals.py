"""The card's preprocessing steps, applied by the protocol's reference implementation.

Every step a card names is a protocol step (:mod:`protocol.manifest`, computed by
:mod:`protocol.preprocessing`), so training, evaluation, the edge agent and the hub share one
definition. This module adds what only training needs: recordings of unequal length (an object array of
1-D series) are processed one by one until a ``resample`` or ``fit_length`` step makes them equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter

from protocol.manifest import FitLength, PreprocessStep, Resample
from protocol.preprocessing import apply_step
from protocol.preprocessing import fit_length as _fit_length
from protocol.preprocessing import resample as _resample

_PROTOCOL_STEP: TypeAdapter[PreprocessStep] = TypeAdapter(PreprocessStep)
# Cards written before the protocol had an MFCC step named three of its parameters differently.
_LEGACY_MFCC = {"mel_bands": "n_mels", "coefficients": "n_mfcc", "log_floor": "log_offset"}


def resample(series: npt.ArrayLike, length: int) -> npt.NDArray[np.float64]:
    """Linear interpolation of one series (last axis) to ``length`` samples, endpoints kept."""
    return _resample(np.asarray(series, dtype=np.float64), Resample(length=length))


def fit_length(series: npt.ArrayLike, length: int, *, pad: float = 0.0) -> npt.NDArray[np.float64]:
    """The first ``length`` samples (last axis), with ``pad`` appended where the series is shorter."""
    return _fit_length(np.asarray(series, dtype=np.float64), FitLength(length=length, pad=pad))


def protocol_step(step: Mapping[str, Any]) -> PreprocessStep:
    """A card's step (a mapping) as the protocol step it names."""
    fields = dict(step)
    if fields.get("op") == "mfcc":
        fields = {_LEGACY_MFCC.get(key, key): value for key, value in fields.items()}
    return _PROTOCOL_STEP.validate_python(fields)


def _apply(data: npt.NDArray[np.float64], step: Mapping[str, Any]) -> npt.NDArray[np.float64]:
    return apply_step(data, protocol_step(step))


def apply_preprocessing(windows: npt.ArrayLike, steps: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
    """Apply a card's steps, in order, to a batch of raw windows (``[batch, ..., sample]``); float32 out.

    ``windows`` may also be an object array of 1-D series of unequal lengths (see the module docstring).
    """
    raw = np.asarray(windows) if not isinstance(windows, list) else np.asarray(windows, dtype=object)
    if raw.dtype == object:
        series = [np.asarray(row, dtype=np.float64)[np.newaxis] for row in raw]
        for step in steps:
            series = [_apply(row, step) for row in series]
        return np.concatenate(series).astype(np.float32)
    data = raw.astype(np.float64)
    for step in steps:
        data = _apply(data, step)
    return data.astype(np.float32)
