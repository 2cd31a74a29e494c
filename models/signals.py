"""The card's preprocessing steps in numpy: the protocol's (``znorm``, ``scale``) plus those it has no name for yet.

``resample``: linear interpolation of each series to ``length`` samples, first and last sample kept
(``numpy.interp`` over ``linspace(0, n - 1, length)``). ``fit_length``: keep the first ``length`` samples,
or append ``pad`` values up to ``length`` (a recording shorter than the model's window; a device that
streams at the training sample rate delivers full windows, for which this step does nothing).

``mfcc``: mel-frequency cepstral coefficients of an audio window, shape ``[coefficients, frames]`` (see
:func:`mfcc` for every constant; the card records them all).

A runtime reproduces a model's input by applying the card's steps in order to the raw window; every step
works on the last axis, so a multichannel window (``[channel, sample]``) is processed channel by channel.
Recordings of unequal length (an object array of 1-D series) are processed one by one until a ``resample``
or ``fit_length`` step makes them equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter

from protocol.manifest import PreprocessStep
from protocol.preprocessing import preprocess

_PROTOCOL_STEP: TypeAdapter[PreprocessStep] = TypeAdapter(PreprocessStep)


def resample(series: npt.ArrayLike, length: int) -> npt.NDArray[np.float64]:
    """Linear interpolation of one series (last axis) to ``length`` samples, endpoints kept."""
    values = np.asarray(series, dtype=np.float64)
    source = np.linspace(0.0, 1.0, values.shape[-1])
    target = np.linspace(0.0, 1.0, length)
    flat = values.reshape(-1, values.shape[-1])
    return np.stack([np.interp(target, source, row) for row in flat]).reshape(*values.shape[:-1], length)


def fit_length(series: npt.ArrayLike, length: int, *, pad: float = 0.0) -> npt.NDArray[np.float64]:
    """The first ``length`` samples (last axis), with ``pad`` appended where the series is shorter."""
    values = np.asarray(series, dtype=np.float64)[..., :length]
    missing = length - values.shape[-1]
    if missing <= 0:
        return values
    return np.concatenate([values, np.full((*values.shape[:-1], missing), pad)], axis=-1)


def _hertz_to_mel(frequency: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(frequency, dtype=np.float64) / 700.0))


def _mel_to_hertz(mel: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0))


def mel_filterbank(*, sample_rate: int, n_fft: int, bands: int, fmin: float, fmax: float) -> npt.NDArray[np.float64]:
    """Triangular filters ``[bands, n_fft // 2 + 1]`` equally spaced on the HTK mel scale, peak 1."""
    edges = _mel_to_hertz(np.linspace(_hertz_to_mel(fmin), _hertz_to_mel(fmax), bands + 2))
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lower, centre, upper = edges[:-2, np.newaxis], edges[1:-1, np.newaxis], edges[2:, np.newaxis]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.asarray(np.clip(np.minimum(rising, falling), 0.0, None))


def mfcc(
    audio: npt.ArrayLike,
    *,
    sample_rate: int,
    frame_length: int,
    hop: int,
    n_fft: int,
    mel_bands: int,
    fmin: float,
    fmax: float,
    coefficients: int,
    log_floor: float,
) -> npt.NDArray[np.float64]:
    """MFCCs of audio windows (last axis): ``[..., coefficients, frames]``.

    Frames of ``frame_length`` samples every ``hop`` (no padding, so ``1 + (n - frame_length) // hop``
    frames), a periodic Hann window, the power spectrum ``|rfft(frame, n_fft)|² / n_fft``, the
    :func:`mel_filterbank`, ``log(mel + log_floor)``, and an orthonormal DCT-II over the bands, of which the
    first ``coefficients`` are kept.
    """
    values = np.asarray(audio, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(values, frame_length, axis=-1)[..., ::hop, :]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame_length) / frame_length)
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=-1)) ** 2 / n_fft
    bank = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, bands=mel_bands, fmin=fmin, fmax=fmax)
    log_mel = np.log(power @ bank.T + log_floor)
    index = np.arange(mel_bands)
    dct = np.cos(np.pi / mel_bands * (index[np.newaxis, :] + 0.5) * np.arange(coefficients)[:, np.newaxis])
    dct *= np.sqrt(2.0 / mel_bands)
    dct[0] /= np.sqrt(2.0)
    return np.asarray(np.swapaxes(log_mel @ dct.T, -1, -2))


def _apply(data: npt.NDArray[np.float64], step: Mapping[str, Any]) -> npt.NDArray[np.float64]:
    if step["op"] == "mfcc":
        return mfcc(data, **{key: value for key, value in step.items() if key != "op"})
    if step["op"] == "resample":
        return resample(data, int(step["length"]))
    if step["op"] == "fit_length":
        return fit_length(data, int(step["length"]), pad=float(step.get("pad", 0.0)))
    return preprocess(data, [_PROTOCOL_STEP.validate_python(dict(step))]).astype(np.float64)


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
