"""A MiniRocket-style classifier as one small ONNX graph: fixed convolutions, PPV pooling, a ridge head.

MiniRocket (Dempster et al. 2021) convolves a series with 84 fixed kernels of length 9 (weights -1, and 2
at three of the nine taps) at a few dilations, subtracts biases drawn from quantiles of the convolution
outputs on training series, and pools each (kernel, dilation, bias) triple to one feature: the proportion
of positive values (PPV), the mean over time of ``output > bias``. A ridge classifier on those features is
the whole model. Here the same transform is a torch module that exports to ONNX (opset 17):

- per dilation, two groups of features (MiniRocket pools half of them over the whole output and half over
  the part computed without padding), each one ``Conv1d`` with a channel per feature (zero padding as
  MiniRocket's for the whole-output group, none for the other), then PPV pooling against the biases:
  ``Add`` of the scaled biases, ``Clip(0, 1)`` and ``ReduceMean`` (``ppv="step"``, exact; see
  :class:`_FeatureGroup`) or a steep ``Sigmoid`` instead of the clip (``ppv="sigmoid"``, an approximation
  int8 quantization could in principle keep in the integer domain; measured, it is less accurate in fp32
  and breaks under int8);
- a ``Linear`` head (ridge regression with cross-validated alpha, as MiniRocket's) and a ``Softmax``.
  Ridge scores are not calibrated probabilities: only the ordering of ``probabilities`` is meaningful.

MiniRocket fits its ridge on features scaled to unit variance. Folded into the head, that scaling gives
features of tiny variance weights hundreds of times larger than the rest, and int8 weights with one scale
per class then round most weights to zero (measured on PLAID: int8 accuracy 0.16 against 0.90 for fp32).
The head is therefore fitted on the raw PPV features (all in ``[0, 1]``) by default (``standardize=False``);
on PLAID this costs about one point of fp32 accuracy and quantizes without loss.

Univariate windows ``[batch, sample]`` only. :func:`fit_rocket` fits biases and head on training windows;
:func:`prune_rocket` keeps the features whose head weights matter most, removing their kernel, bias and
head column (and whole convolutions and dilations left without features), and refits the head, so that the
smaller model really computes less. :mod:`models.rocket_recipe` makes it a task's edge model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

KERNEL_LENGTH = 9
KERNEL_TAPS: tuple[tuple[int, int, int], ...] = tuple(
    (a, b, c) for a, b, c in itertools.combinations(range(KERNEL_LENGTH), 3)
)
"""The 84 kernels: the three taps (of nine) that weigh 2; the other six weigh -1."""
RIDGE_ALPHAS = tuple(float(alpha) for alpha in np.logspace(-3, 3, 10))
"""MiniRocket's (and sktime's ``RocketClassifier``'s) alpha grid for ``RidgeClassifierCV``."""
MAX_DILATIONS_PER_KERNEL = 32
GOLDEN = (np.sqrt(5.0) + 1.0) / 2.0

Ppv = Literal["step", "sigmoid"]


def kernel_weights() -> npt.NDArray[np.float32]:
    """``[84, 9]``: -1 everywhere, 2 at each kernel's three taps (each row sums to zero)."""
    weights = -np.ones((len(KERNEL_TAPS), KERNEL_LENGTH), dtype=np.float32)
    for row, taps in enumerate(KERNEL_TAPS):
        weights[row, list(taps)] = 2.0
    return weights


def fit_dilations(
    window: int, n_features: int, max_dilations_per_kernel: int = MAX_DILATIONS_PER_KERNEL
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """MiniRocket's dilations for a window length and how many features per kernel each gets.

    Dilations are spread exponentially from 1 to ``(window - 1) / 8`` (the largest whose kernel still fits
    the window); ``n_features`` is rounded down to a multiple of 84 (at least 84).
    """
    if window < KERNEL_LENGTH:
        raise ValueError(f"windows of {window} samples are shorter than the kernels ({KERNEL_LENGTH})")
    per_kernel = max(n_features, len(KERNEL_TAPS)) // len(KERNEL_TAPS)
    count = min(per_kernel, max_dilations_per_kernel)
    multiplier = per_kernel / count
    exponent = np.log2((window - 1) / (KERNEL_LENGTH - 1))
    dilations, repeats = np.unique(np.logspace(0, exponent, count, base=2).astype(np.int64), return_counts=True)
    per_dilation = (repeats * multiplier).astype(np.int64)
    remainder = per_kernel - int(per_dilation.sum())
    index = 0
    while remainder > 0:
        per_dilation[index] += 1
        remainder -= 1
        index = (index + 1) % len(per_dilation)
    return dilations, per_dilation


def quantiles(count: int) -> npt.NDArray[np.float64]:
    """MiniRocket's low-discrepancy quantiles: the fractional parts of ``k · golden ratio``, k = 1 … count."""
    return np.asarray((np.arange(1, count + 1) * GOLDEN) % 1.0, dtype=np.float64)


@dataclass(frozen=True)
class RocketFeatures:
    """The fitted front end, one entry per feature (in the module's output order)."""

    window: int
    dilations: npt.NDArray[np.int64]
    kernels: npt.NDArray[np.int64]
    """Index into :data:`KERNEL_TAPS`."""
    biases: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    """True: PPV over the outputs computed without padding; False: over the whole (zero-padded) output."""

    def __len__(self) -> int:
        return len(self.biases)

    def select(self, indices: npt.ArrayLike) -> RocketFeatures:
        """The features at ``indices``, kept in their current order."""
        keep = np.sort(np.asarray(indices, dtype=np.int64))
        return RocketFeatures(
            self.window, self.dilations[keep], self.kernels[keep], self.biases[keep], self.valid[keep]
        )

    def ordered(self) -> tuple[RocketFeatures, npt.NDArray[np.int64]]:
        """Sorted as the module computes them (dilation, then whole-output before valid-part, then kernel).

        Returns the sorted features and the permutation applied.
        """
        order = np.lexsort((self.kernels, self.valid, self.dilations)).astype(np.int64)
        return (
            RocketFeatures(
                self.window, self.dilations[order], self.kernels[order], self.biases[order], self.valid[order]
            ),
            order,
        )


def _convolve(windows: npt.NDArray[np.float32], kernels: npt.NDArray[np.int64], dilation: int) -> torch.Tensor:
    """``[n, len(kernels), window]``: the kernels at one dilation, zero padding keeping the length."""
    weight = torch.from_numpy(kernel_weights()[kernels][:, np.newaxis, :])
    series = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))[:, np.newaxis, :]
    padding = (KERNEL_LENGTH - 1) * dilation // 2
    return nn.functional.conv1d(series, weight, dilation=dilation, padding=padding)


def fit_features(
    windows: npt.NDArray[np.float32],
    n_features: int = 10_000,
    *,
    seed: int = 0,
    max_dilations_per_kernel: int = MAX_DILATIONS_PER_KERNEL,
) -> RocketFeatures:
    """Dilations, kernels and biases as MiniRocket fits them, on training windows ``[n, sample]``.

    For every (dilation, kernel) pair one training window is drawn at random; the pair's biases are
    quantiles of that window's convolution output. Half the pairs (alternating by dilation and kernel)
    pool over the part of the output computed without padding, as in MiniRocket.
    """
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2:
        raise ValueError(f"univariate windows [n, sample] expected, got shape {windows.shape}")
    window = windows.shape[1]
    dilation_values, per_dilation = fit_dilations(window, n_features, max_dilations_per_kernel)
    total = len(KERNEL_TAPS) * int(per_dilation.sum())
    levels = quantiles(total)
    rng = np.random.default_rng(seed)
    all_kernels = np.arange(len(KERNEL_TAPS), dtype=np.int64)
    dilations: list[int] = []
    kernels: list[int] = []
    biases: list[float] = []
    valid: list[bool] = []
    start = 0
    with torch.no_grad():
        for dilation_index, (dilation, count) in enumerate(zip(dilation_values, per_dilation, strict=True)):
            drawn = rng.integers(len(windows), size=len(KERNEL_TAPS))
            outputs = _convolve(windows[drawn], all_kernels, int(dilation)).numpy()  # [84, 1, L] per pair
            for kernel in range(len(KERNEL_TAPS)):
                values = outputs[kernel, kernel].astype(np.float64)
                biases.extend(np.quantile(values, levels[start : start + count]).tolist())
                start += int(count)
                dilations.extend([int(dilation)] * int(count))
                kernels.extend([kernel] * int(count))
                valid.extend([(dilation_index + kernel) % 2 == 1] * int(count))
    features = RocketFeatures(
        window,
        np.asarray(dilations, dtype=np.int64),
        np.asarray(kernels, dtype=np.int64),
        np.asarray(biases, dtype=np.float32),
        np.asarray(valid, dtype=np.bool_),
    )
    return features.ordered()[0]


SCALE = 2.0**64
"""Weights and biases are scaled by this power of two in the graph: exact in float32, and large enough that
``Clip(scaled output - scaled bias, 0, 1)`` is MiniRocket's step ``output > bias`` (see :class:`_FeatureGroup`)."""
SMALLEST_BIAS = np.float32(1.0 / SCALE)
"""A nonzero bias nearer zero than this is moved out to it, sign kept, so that an output of exactly zero (a
kernel over a flat stretch) still differs from it by at least one step after scaling; no convolution output
of the windows lies strictly between (they are zero or far larger)."""


class _FeatureGroup(nn.Module):
    """The features of one dilation pooled over one part of the output, as four ONNX nodes.

    One ``Conv`` with a channel per feature (its kernel at the group's dilation, weights times
    :data:`SCALE`), zero padding for the whole-output group and none for the valid-part group (which then
    computes exactly the part MiniRocket pools), then ``Add`` of minus the scaled biases, ``Clip(0, 1)`` and
    ``ReduceMean`` over time: the PPV. Scaling by a power of two is exact, so the ``Add`` gives the exact
    difference times 2⁶⁴, which is 0 or below where ``output <= bias`` and at least 1 wherever the
    difference is at least 2⁻⁶⁴, far below any nonzero output of the windows (biases nearer zero: see
    :data:`SMALLEST_BIAS`): the clip is the step. The bias is added to the finished sum, never folded into the
    convolution's accumulator, whose other summation order rounds away MiniRocket's biases near zero on
    flat stretches (measured on ACSF1: features off by up to 0.69). ONNX Runtime fuses ``Add`` and ``Clip``
    into the convolution; the earlier graph (``Conv`` per kernel set, ``Gather``, ``Slice``, ``Greater``,
    ``Cast``, ``ReduceMean``) made four passes more over features × samples.
    """

    offsets: torch.Tensor
    """``[1, features, 1]``: minus the biases times :data:`SCALE`."""

    def __init__(
        self,
        kernels: npt.NDArray[np.int64],
        biases: npt.NDArray[np.float32],
        *,
        dilation: int,
        valid: bool,
        ppv: Ppv,
        steepness: float,
    ) -> None:
        super().__init__()
        self.dilation = dilation
        self.padding = 0 if valid else (KERNEL_LENGTH - 1) * dilation // 2
        self.ppv = ppv
        self.steepness = steepness
        self.conv = nn.Conv1d(1, len(kernels), KERNEL_LENGTH, dilation=dilation, padding=self.padding, bias=False)
        self.conv.weight.data = torch.from_numpy(kernel_weights()[kernels][:, np.newaxis, :] * np.float32(SCALE))
        self.conv.weight.requires_grad_(False)
        biases = np.asarray(biases, dtype=np.float32)
        tiny = (biases != 0) & (np.abs(biases) < SMALLEST_BIAS)
        biases = np.where(tiny, np.copysign(SMALLEST_BIAS, biases), biases).astype(np.float32)
        self.register_buffer("offsets", torch.from_numpy((-biases * np.float32(SCALE)).reshape(1, -1, 1)))

    def pool(self, outputs: torch.Tensor) -> torch.Tensor:
        """PPV of scaled convolution outputs ``[batch, features, time]``."""
        if self.ppv == "step":
            return torch.clamp(outputs + self.offsets, 0.0, 1.0).mean(dim=-1)
        return torch.sigmoid((outputs + self.offsets) * (self.steepness / SCALE)).mean(dim=-1)

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(series))

    def tap_by_tap(self, series: torch.Tensor) -> torch.Tensor:
        """What ONNX Runtime's ``Conv`` computes, to the bit: the nine products added in tap order.

        Every product is exact (weights ±2⁶⁴ or 2⁶⁵), so adding them one at a time rounds as a fused
        multiply-add does; torch's own convolution adds them in other orders and differs from ONNX
        Runtime on a few near-zero sums per million, enough to move a feature by a step.
        """
        padded = nn.functional.pad(series[:, 0, :], (self.padding, self.padding))
        length = padded.shape[-1] - (KERNEL_LENGTH - 1) * self.dilation
        weight = self.conv.weight[:, 0, :]
        total = torch.zeros((series.shape[0], weight.shape[0], length), dtype=series.dtype)
        for tap in range(KERNEL_LENGTH):
            shifted = padded[:, tap * self.dilation : tap * self.dilation + length]
            total.addcmul_(weight[:, tap].reshape(1, -1, 1), shifted.unsqueeze(1))
        return self.pool(total)

    def output_length(self, window: int) -> int:
        """Convolution outputs per feature for a window of ``window`` samples."""
        return window + 2 * self.padding - (KERNEL_LENGTH - 1) * self.dilation


class RocketFrontEnd(nn.Module):
    """Windows ``[batch, sample]`` → PPV features ``[batch, n_features]`` in ``[0, 1]``."""

    def __init__(self, features: RocketFeatures, *, ppv: Ppv = "step", steepness: float = 8.0) -> None:
        super().__init__()
        order = features.ordered()[1]
        if not np.array_equal(order, np.arange(len(order))):
            raise ValueError("features must be in the module's order: use RocketFeatures.ordered()")
        self.features = features
        self.ppv = ppv
        self.steepness = steepness
        groups = []
        for dilation in np.unique(features.dilations):
            for valid in (False, True):
                members = (features.dilations == dilation) & (features.valid == valid)
                if members.any():
                    groups.append(
                        _FeatureGroup(
                            features.kernels[members],
                            features.biases[members],
                            dilation=int(dilation),
                            valid=valid,
                            ppv=ppv,
                            steepness=steepness,
                        )
                    )
        self.groups = nn.ModuleList(groups)

    @property
    def feature_groups(self) -> list[_FeatureGroup]:
        """The groups in output order: per dilation, the whole-output group, then the valid-part group."""
        return cast(list[_FeatureGroup], list(self.groups))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        series = window.unsqueeze(1)
        return torch.cat([group(series) for group in self.feature_groups], dim=1)

    def tap_by_tap(self, window: torch.Tensor) -> torch.Tensor:
        """The features as ONNX Runtime computes them from the exported graph (see :meth:`_FeatureGroup.tap_by_tap`)."""
        series = window.unsqueeze(1)
        return torch.cat([group.tap_by_tap(series) for group in self.feature_groups], dim=1)

    def multiply_accumulates(self) -> int:
        """Per window: nine multiply-accumulates per feature and convolution output, and one step for each."""
        window = self.features.window
        return sum(
            (KERNEL_LENGTH + 1) * group.conv.out_channels * group.output_length(window) for group in self.feature_groups
        )


class RocketClassifier(nn.Module):
    """Windows ``[batch, sample]`` → ``probabilities`` (softmax of the ridge head's scores)."""

    def __init__(self, front: RocketFrontEnd, n_classes: int) -> None:
        super().__init__()
        self.front = front
        self.head = nn.Linear(len(front.features), n_classes)
        self.importance: npt.NDArray[np.float64] = np.zeros(len(front.features))
        """Per feature: how much one standard deviation of it moves the head's scores (pruning order)."""
        self.alpha = 0.0
        self.standardize = False
        """Whether the head was fitted on standardized features (see :func:`fit_ridge_head`)."""

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(window), dim=-1)

    def logits(self, window: torch.Tensor) -> torch.Tensor:
        """The head's scores ``[batch, classes]`` (the softmax's input)."""
        scores: torch.Tensor = self.head(self.front(window))
        return scores


class RocketLogits(nn.Module):
    """A :class:`RocketClassifier` as a logits model (its head's scores)."""

    def __init__(self, model: RocketClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """The head's scores ``[batch, classes]``."""
        scores: torch.Tensor = self.model.logits(windows)
        return scores


def transform(
    front: RocketFrontEnd, windows: npt.NDArray[np.float32], *, batch_size: int = 32
) -> npt.NDArray[np.float32]:
    """The front end's features for windows ``[n, sample]``, as the exported graph computes them.

    Heads, pruning and selection are fitted on these (:meth:`RocketFrontEnd.tap_by_tap`), so that a model
    is trained on the very features ONNX Runtime gives it on a device.
    """
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    parts = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            parts.append(front.tap_by_tap(torch.from_numpy(windows[start : start + batch_size])).numpy())
    return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class RidgeHead:
    """A linear head on raw features: ``scores = features @ weight.T + bias``."""

    weight: npt.NDArray[np.float32]
    """``[n_classes, n_features]``."""
    bias: npt.NDArray[np.float32]
    importance: npt.NDArray[np.float64]
    alpha: float


def fit_ridge_head(
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    n_classes: int,
    *,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    standardize: bool = False,
) -> RidgeHead:
    """A ridge head: ``RidgeClassifierCV`` over ``alphas`` on the raw features.

    With ``standardize`` (MiniRocket's choice), on features scaled to unit variance (no centring), the
    scaling then folded into the weights. With two classes the ridge's single score ``s`` becomes the
    logits ``[-s/2, s/2]``, so that the softmax's larger class is the ridge's prediction. ``importance`` is
    per feature the norm over classes of ``weight × standard deviation``: how far one standard deviation of
    the feature moves the scores, comparable across features of different spread whichever the fit.
    """
    from sklearn.linear_model import RidgeClassifierCV

    data = np.asarray(features, dtype=np.float64)
    scale = data.std(axis=0) if standardize else np.ones(data.shape[1])
    scale[scale == 0.0] = 1.0  # as sklearn's StandardScaler
    present = np.unique(labels)
    if len(present) != n_classes or not np.array_equal(present, np.arange(n_classes)):
        raise ValueError(f"training labels must cover classes 0..{n_classes - 1}, got {present.tolist()}")
    ridge = RidgeClassifierCV(alphas=list(alphas)).fit(data / scale, labels)
    coefficients = np.atleast_2d(ridge.coef_)
    intercept = np.atleast_1d(ridge.intercept_)
    if n_classes == 2:
        coefficients = np.vstack([-coefficients / 2, coefficients / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = coefficients / scale
    importance = np.sqrt(((weight * data.std(axis=0)) ** 2).sum(axis=0))
    return RidgeHead(
        weight=weight.astype(np.float32),
        bias=intercept.astype(np.float32),
        importance=importance,
        alpha=float(ridge.alpha_),
    )


def with_head(front: RocketFrontEnd, head: RidgeHead, *, standardize: bool = False) -> RocketClassifier:
    """A classifier of ``front`` and a fitted ``head``."""
    model = RocketClassifier(front, len(head.bias))
    model.standardize = standardize
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(head.weight))
        model.head.bias.copy_(torch.from_numpy(head.bias))
    model.importance = head.importance
    model.alpha = head.alpha
    return model.eval()


def fit_rocket(
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    n_classes: int,
    *,
    n_features: int = 10_000,
    seed: int = 0,
    ppv: Ppv = "step",
    steepness: float = 8.0,
    features: RocketFeatures | None = None,
    standardize: bool = False,
) -> RocketClassifier:
    """Fit biases (unless ``features`` are given) and the ridge head on training windows ``[n, sample]``."""
    windows = np.asarray(windows, dtype=np.float32)
    if features is None:
        features = fit_features(windows, n_features, seed=seed)
    front = RocketFrontEnd(features, ppv=ppv, steepness=steepness).eval()
    head = fit_ridge_head(transform(front, windows), labels, n_classes, standardize=standardize)
    return with_head(front, head, standardize=standardize)


def pruned_indices(importance: npt.NDArray[np.float64], keep: float | int) -> npt.NDArray[np.int64]:
    """Indices (sorted) of the most important features: ``keep`` of them, or that fraction when below 1."""
    count = round(keep * len(importance)) if isinstance(keep, float) and keep <= 1.0 else int(keep)
    count = max(1, min(count, len(importance)))
    return np.sort(np.argsort(-importance, kind="stable")[:count]).astype(np.int64)


def prune_rocket(
    model: RocketClassifier,
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    keep: float | int,
    *,
    features: npt.NDArray[np.float32] | None = None,
) -> RocketClassifier:
    """Keep the features whose head weights matter most and refit the head on the training windows.

    Dropped features lose their bias, head column and (where no other feature uses them) their kernel's
    convolution channel; a dilation left without features loses its convolution. ``features`` may pass the
    full model's training features to skip recomputing them.
    """
    chosen = pruned_indices(model.importance, keep)
    kept = model.front.features.select(chosen)
    front = RocketFrontEnd(kept, ppv=model.front.ppv, steepness=model.front.steepness).eval()
    training = transform(front, windows) if features is None else np.asarray(features, dtype=np.float32)[:, chosen]
    head = fit_ridge_head(training, labels, model.head.out_features, standardize=model.standardize)
    return with_head(front, head, standardize=model.standardize)


def predict(model: RocketClassifier, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Predicted classes (torch), for windows ``[n, sample]``."""
    features = transform(model.front, windows)
    with torch.no_grad():
        scores = model.head(torch.from_numpy(features)).numpy()
    return np.asarray(scores.argmax(axis=1), dtype=np.int64)


FRONT_END_OPS = ("Unsqueeze", "Conv", "Add", "Clip", "Mul", "Sigmoid", "ReduceMean")
"""The front end's ONNX op types, kept fp32 by :func:`export_rocket`. Measured: int8 convolution outputs
(one scale for the whole range of a dilation's outputs) move values across the PPV thresholds and cost
PLAID 10 points or more (0.79 against 0.90). The bias ``Add`` and the step's ``Clip`` must stay exact
(ONNX Runtime folds both into the ``Conv`` anyway); ``ReduceMean`` runs in fp32 and its output, the PPV,
is quantized as the head's input."""


def export_rocket(
    model: RocketClassifier,
    directory: Path,
    name: str,
    calibration_windows: npt.NDArray[np.float32],
    *,
    quantize_front_end: bool = False,
) -> tuple[Path, Path]:
    """Write ``<name>_fp32.onnx`` and ``<name>_int8.onnx`` (ONNX Runtime static QDQ, training windows only).

    The int8 graph quantizes the head (``Concat`` of the features, ``Gemm`` with per-class int8 weights,
    ``Softmax``); the front end stays fp32 unless ``quantize_front_end`` (kept to measure what breaks).
    """
    from models.export import export_onnx, quantize_int8

    fp32_path = directory / f"{name}_fp32.onnx"
    int8_path = directory / f"{name}_int8.onnx"
    export_onnx(model.eval(), fp32_path, window_size=model.front.features.window, output_names=("probabilities",))
    quantize_int8(
        fp32_path,
        int8_path,
        np.asarray(calibration_windows, dtype=np.float32),
        exclude_op_types=() if quantize_front_end else FRONT_END_OPS,
    )
    return fp32_path, int8_path


@dataclass(frozen=True)
class Selection:
    """Cross-validated accuracies on the training split and the configuration they choose."""

    accuracy: dict[tuple[int, float], float]
    """``(requested features, fraction kept) → mean out-of-fold accuracy``."""
    n_features: int
    keep: float
    pruned_features: int
    """The requested feature count the pruned model starts from (not necessarily ``n_features``)."""
    pruned_within_tolerance: bool
    """False when no pruned model came within the tolerance of the best configuration; the pruned choice is then
    the best pruned one."""


def select_configuration(
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    n_classes: int,
    *,
    feature_counts: Sequence[int] = (1_000, 3_000, 10_000),
    keeps: Sequence[float] = (0.5, 0.25, 0.1),
    folds: int = 5,
    seed: int = 0,
    tolerance: float = 0.01,
    standardize: bool = False,
) -> Selection:
    """Choose the feature count and the pruning by stratified cross-validation on training windows only.

    Every fold fits biases, head and pruning order on its own training part. The full model: the feature
    count with the best out-of-fold accuracy (ties: fewer features). The pruned model: of all (feature count,
    fraction kept < 1) pairs whose accuracy is within ``tolerance`` of the best configuration's, full or
    pruned (removing features can score better than keeping them), the one keeping the fewest features (ties:
    the more accurate); if none is, the most accurate pruned pair.
    """
    from sklearn.model_selection import StratifiedKFold

    windows = np.asarray(windows, dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    correct: dict[tuple[int, float], int] = {}
    for fit_rows, check_rows in splitter.split(windows, labels):
        for count in feature_counts:
            features = fit_features(windows[fit_rows], count, seed=seed)
            front = RocketFrontEnd(features).eval()
            fit_data, check_data = transform(front, windows[fit_rows]), transform(front, windows[check_rows])
            head = fit_ridge_head(fit_data, labels[fit_rows], n_classes, standardize=standardize)
            for keep in (1.0, *keeps):
                if keep < 1.0:
                    chosen = pruned_indices(head.importance, keep)
                    smaller = fit_ridge_head(fit_data[:, chosen], labels[fit_rows], n_classes, standardize=standardize)
                    scores = check_data[:, chosen] @ smaller.weight.T + smaller.bias
                else:
                    scores = check_data @ head.weight.T + head.bias
                hits = int((scores.argmax(axis=1) == labels[check_rows]).sum())
                correct[(count, keep)] = correct.get((count, keep), 0) + hits
    accuracy = {key: hits / len(labels) for key, hits in correct.items()}
    return choose_configuration(accuracy, feature_counts, keeps, tolerance=tolerance)


def choose_configuration(
    accuracy: Mapping[tuple[int, float], float],
    feature_counts: Sequence[int],
    keeps: Sequence[float],
    *,
    tolerance: float,
) -> Selection:
    """:func:`select_configuration`'s rule, on its cross-validated ``(count, fraction kept) → accuracy``."""
    best = max(feature_counts, key=lambda count: (accuracy[(count, 1.0)], -count))
    pruned = [(count, keep) for count in feature_counts for keep in keeps]
    reference = max(accuracy[(best, 1.0)], *(accuracy[pair] for pair in pruned))
    within = [pair for pair in pruned if accuracy[pair] >= reference - tolerance]
    if within:
        count, keep = min(within, key=lambda pair: (pair[0] * pair[1], -accuracy[pair]))
    else:
        count, keep = max(pruned, key=lambda pair: (accuracy[pair], -pair[0] * pair[1]))
    return Selection(dict(accuracy), best, keep, count, bool(within))
