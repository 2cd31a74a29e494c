"""Reference implementation of the manifest's preprocessing steps (pure computation, numpy only).

Steps apply in order to a batch of raw windows. Every step works on the trailing axes and leaves the
leading (batch) axes alone: 1-D steps (``znorm``, ``scale``, ``resample``, ``fit_length``, ``mfcc``) on the
last axis, so a multichannel window ``[channel, sample]`` is processed channel by channel; image steps on
``[height, width(, channel)]``. The training code of every model applies these same functions, so what a
model was trained on and what a runtime feeds it share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocol.manifest import FitLength, Frame, Grayscale, Mfcc, PreprocessStep, Resample, Resize, Scale, ZNormalize

Floats = npt.NDArray[np.float64]


class PreprocessingError(ValueError):
    """A window does not fit a preprocessing step (too short for a frame, not an image of that shape, ...)."""


def preprocess(windows: npt.ArrayLike, steps: Sequence[PreprocessStep]) -> npt.NDArray[np.float32]:
    """Apply ``steps`` to a batch of windows, shape ``[batch, ...]``; returns float32.

    A 1-D input is one window. Raises :class:`PreprocessingError` when a window does not fit a step.
    """
    data = np.asarray(windows, dtype=np.float64)
    if data.ndim == 1:
        data = data[np.newaxis, :]
    # Finite but extreme values (1e300, say) overflow a mean or a square: refuse the window, never
    # hand a model inf or NaN.
    with np.errstate(over="raise", invalid="raise"):
        for step in steps:
            try:
                data = apply_step(data, step)
            except FloatingPointError as exc:
                raise PreprocessingError(f"step {step.op!r} leaves the float range on this window: {exc}") from exc
    if not np.all(np.isfinite(data)):
        raise PreprocessingError("a window is not finite after preprocessing")
    with np.errstate(over="raise"):
        try:
            return data.astype(np.float32)
        except FloatingPointError as exc:
            raise PreprocessingError(f"a preprocessed window does not fit float32: {exc}") from exc


def apply_step(data: Floats, step: PreprocessStep) -> Floats:
    """One step on float64 data (see :func:`preprocess`)."""
    if isinstance(step, ZNormalize):
        mean = data.mean(axis=-1, keepdims=True)
        std = data.std(axis=-1, keepdims=True)
        return np.asarray((data - mean) / (std + step.epsilon))
    if isinstance(step, Scale):
        return np.asarray((data - step.offset) * step.factor)
    if isinstance(step, Resample):
        return resample(data, step)
    if isinstance(step, FitLength):
        return fit_length(data, step)
    if isinstance(step, Mfcc):
        return mfcc(data, step)
    if isinstance(step, Frame):
        return frame(data, step)
    if isinstance(step, Grayscale):
        return grayscale(data, step)
    if isinstance(step, Resize):
        return resize(data, step)
    raise PreprocessingError(f"unknown preprocessing step {step!r}")


def resample(data: Floats, step: Resample) -> Floats:
    """Linear interpolation along the last axis (see :class:`~protocol.manifest.Resample`)."""
    size = data.shape[-1]
    if step.length is not None:
        length = step.length
    else:
        assert step.source_rate_hz is not None and step.target_rate_hz is not None  # the model checked
        length = round(size * step.target_rate_hz / step.source_rate_hz)
    if size < 2 or length < 1:
        raise PreprocessingError(f"cannot resample a window of {size} samples to {length}")
    source = np.linspace(0.0, 1.0, size)
    target = np.linspace(0.0, 1.0, length)
    flat = data.reshape(-1, size)
    return np.stack([np.interp(target, source, row) for row in flat]).reshape(*data.shape[:-1], length)


def fit_length(data: Floats, step: FitLength) -> Floats:
    """Pad or crop the last axis to ``step.length`` samples (see :class:`~protocol.manifest.FitLength`)."""
    size = data.shape[-1]
    change = step.length - size
    if change == 0:
        return data
    if change < 0:
        start = {"end": 0, "start": -change, "both": -change // 2}[step.where]
        return data[..., start : start + step.length]
    before = {"end": 0, "start": change, "both": change // 2}[step.where]
    widths = [(0, 0)] * (data.ndim - 1) + [(before, change - before)]
    return np.pad(data, widths, constant_values=step.pad)


def hertz_to_mel(frequency: npt.ArrayLike) -> Floats:
    """The HTK mel scale."""
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(frequency, dtype=np.float64) / 700.0))


def mel_to_hertz(mel: npt.ArrayLike) -> Floats:
    """Inverse of :func:`hertz_to_mel`."""
    return np.asarray(700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0))


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Floats:
    """Triangular filters ``[n_mels, n_fft // 2 + 1]`` equally spaced on the HTK mel scale, peak 1."""
    edges = mel_to_hertz(np.linspace(hertz_to_mel(fmin), hertz_to_mel(fmax), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lower, centre, upper = edges[:-2, np.newaxis], edges[1:-1, np.newaxis], edges[2:, np.newaxis]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.asarray(np.clip(np.minimum(rising, falling), 0.0, None))


def dct_matrix(n_mfcc: int, n_mels: int) -> Floats:
    """Orthonormal DCT-II ``[n_mfcc, n_mels]`` (the first ``n_mfcc`` rows)."""
    index = np.arange(n_mels)
    dct = np.cos(np.pi / n_mels * (index[np.newaxis, :] + 0.5) * np.arange(n_mfcc)[:, np.newaxis])
    dct *= np.sqrt(2.0 / n_mels)
    dct[0] /= np.sqrt(2.0)
    return np.asarray(dct)


def mfcc(data: Floats, step: Mfcc) -> Floats:
    """MFCCs along the last axis: ``[..., n_mfcc, frames]`` (see :class:`~protocol.manifest.Mfcc`)."""
    size = data.shape[-1]
    if size < step.frame_length:
        raise PreprocessingError(f"an MFCC frame takes {step.frame_length} samples; the window has {size}")
    frames = np.lib.stride_tricks.sliding_window_view(data, step.frame_length, axis=-1)[..., :: step.hop, :]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(step.frame_length) / step.frame_length)
    power = np.abs(np.fft.rfft(frames * window, n=step.n_fft, axis=-1)) ** 2
    if step.spectrum_norm == "n_fft":
        power = power / step.n_fft
    bank = mel_filterbank(
        sample_rate=step.sample_rate, n_fft=step.n_fft, n_mels=step.n_mels, fmin=step.fmin, fmax=step.fmax
    )
    log_mel = np.log(power @ bank.T + step.log_offset)
    return np.asarray(np.swapaxes(log_mel @ dct_matrix(step.n_mfcc, step.n_mels).T, -1, -2))


def frame(data: Floats, step: Frame) -> Floats:
    """Flat windows ``[..., height * width * channels]`` as images ``[..., height, width, channels]``."""
    shape = (step.height, step.width, step.channels)
    if data.shape[-3:] == shape and data.ndim >= 4:
        return data
    size = step.height * step.width * step.channels
    if data.shape[-1] != size:
        raise PreprocessingError(
            f"a frame of {step.height} x {step.width} x {step.channels} takes {size} values; "
            f"the window has shape {list(data.shape[1:])}"
        )
    return data.reshape(*data.shape[:-1], *shape)


def grayscale(data: Floats, step: Grayscale) -> Floats:
    """Colour images ``[..., height, width, 3]`` to grey ``[..., height, width]``."""
    if data.ndim < 3 or data.shape[-1] != 3:
        raise PreprocessingError(f"grayscale takes images [..., height, width, 3]; got shape {list(data.shape)}")
    red, green, blue = step.weights
    weights = np.array([blue, green, red] if step.channel_order == "bgr" else [red, green, blue])
    return np.asarray(data @ weights)


def _area_weights(source: int, target: int) -> Floats:
    """``[target, source]``: the share of each output pixel's span covered by each input pixel."""
    span = source / target
    starts = np.arange(target)[:, np.newaxis] * span
    pixels = np.arange(source)[np.newaxis, :]
    overlap = np.clip(np.minimum(starts + span, pixels + 1) - np.maximum(starts, pixels), 0.0, None)
    return np.asarray(overlap / span)


def _bilinear_weights(source: int, target: int) -> Floats:
    """``[target, source]`` interpolation weights with half-pixel centres, edges repeated."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0.0, source - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, source - 1)
    fraction = position - lower
    weights = np.zeros((target, source))
    rows = np.arange(target)
    np.add.at(weights, (rows, lower), 1.0 - fraction)
    np.add.at(weights, (rows, upper), fraction)
    return weights


def resize(data: Floats, step: Resize) -> Floats:
    """Images ``[..., height, width]`` to ``[..., step.height, step.width]``."""
    if data.ndim < 3:
        raise PreprocessingError(f"resize takes images [batch, height, width]; got shape {list(data.shape)}")
    height, width = data.shape[-2:]
    weigh = _area_weights if step.interpolation == "area" else _bilinear_weights
    rows, columns = weigh(height, step.height), weigh(width, step.width)
    return np.asarray(np.einsum("ih,...hw,jw->...ij", rows, data, columns, optimize=True))
