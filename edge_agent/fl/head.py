"""Local training of the classification head with numpy: softmax regression on frozen embeddings, by SGD.

The backbone stays frozen (int8, run by ONNX Runtime); only the head ``logits = features @ weight.T + bias``
learns, so a round needs no torch and costs milliseconds per epoch on a device's few hundred windows.
The global head travels as two arrays, ``weight`` ``[classes, features]`` and ``bias`` ``[classes]``.

SGD runs on the local features standardized (centred, each divided by its spread on the device, a spread
no smaller than :data:`SPREAD_FLOOR` times the features' typical one), with the head rewritten to match and
written back afterwards: the same model, better conditioned steps. It matters for embeddings that are far
from centred and unequal in spread, such as hundreds of proportions in [0, 1] (plain SGD from the same
head: 0.45 test accuracy after one epoch on PLAID's training split; standardized: 0.69), and the floor
keeps a feature that hardly varies on one device from taking huge steps that other devices' data would
pay for. The L2 penalty applies to the standardized weights.

A backbone that standardizes its embedding for the whole fleet (``models/federated.py``: minus the training
split's mean, divided by its spread) makes the local step unneeded, and worse: each device rescaling by its
own spreads makes devices step in differently scaled spaces, which FedAvg then averages. Such a backbone
says so (:attr:`edge_agent.fl.embedding.OnnxEmbedder.standardized`) and the client trains with
``standardize=False``: on ``plaid``'s MiniRocket-style backbone, FedAvg after 20 rounds reached 0.937 of
the centralized head with each device standardizing by its own spreads, 0.966 with the fleet's
(``bench/federated.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.fl.errors import TrainingError

FloatArray = npt.NDArray[np.float32]
WEIGHT = "weight"
BIAS = "bias"
SPREAD_FLOOR = 0.3
"""A feature's spread in standardization is at least this share of the root mean square spread."""


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """SGD on a device: epochs over the local data, minibatch size, step size, L2 penalty, shuffling seed."""

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 0.05
    l2: float = 1e-4
    seed: int = 0
    standardize: bool = True
    """Standardize the local features for the steps (see the module docstring)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.l2 < 0:
            raise TrainingError(f"training settings out of range: {self}")


DEFAULT_TRAINING = TrainingSettings()


@dataclass(frozen=True, slots=True)
class HeadUpdate:
    """The head after local training, and what it scored on the local data before and after."""

    weight: FloatArray
    bias: FloatArray
    loss_before: float
    loss: float
    accuracy: float
    examples: int


def logits(weight: FloatArray, bias: FloatArray, features: FloatArray) -> FloatArray:
    return np.asarray(features @ weight.T + bias, dtype=np.float32)


def probabilities(weight: FloatArray, bias: FloatArray, features: FloatArray) -> FloatArray:
    scores = logits(weight, bias, features)
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


def cross_entropy(weight: FloatArray, bias: FloatArray, features: FloatArray, labels: npt.NDArray[np.int64]) -> float:
    p = probabilities(weight, bias, features)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))))


def accuracy(weight: FloatArray, bias: FloatArray, features: FloatArray, labels: npt.NDArray[np.int64]) -> float:
    if len(labels) == 0:
        return 0.0
    return float(np.mean(np.argmax(logits(weight, bias, features), axis=1) == labels))


def check_head(
    weight: npt.ArrayLike, bias: npt.ArrayLike, features: int | None = None
) -> tuple[FloatArray, FloatArray]:
    """The head as float32 arrays, or :class:`TrainingError` when its shapes do not fit together."""
    w = np.asarray(weight, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise TrainingError(f"a head is weight [classes, features] and bias [classes], not {w.shape} and {b.shape}")
    if features is not None and w.shape[1] != features:
        raise TrainingError(f"the head takes {w.shape[1]} features, the backbone gives {features}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise TrainingError("the head holds NaN or infinite values")
    return w, b


def standardization(features: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(mean, scale)`` per feature for SGD: the spread, floored (see the module docstring); 1 where all is flat."""
    mean = features.mean(axis=0, dtype=np.float64)
    spread = features.std(axis=0, dtype=np.float64)
    scale = np.maximum(spread, SPREAD_FLOOR * np.sqrt(np.mean(spread**2)))
    return mean.astype(np.float32), np.where(scale > 0, scale, 1.0).astype(np.float32)


def step_scaling(features: FloatArray, settings: TrainingSettings) -> tuple[FloatArray, FloatArray]:
    """``(mean, scale)`` the SGD steps run in: :func:`standardization`, or none (0, 1) without ``standardize``."""
    if settings.standardize:
        return standardization(features)
    return np.zeros(features.shape[1], np.float32), np.ones(features.shape[1], np.float32)


def train_head(
    weight: npt.ArrayLike,
    bias: npt.ArrayLike,
    features: FloatArray,
    labels: npt.NDArray[np.int64],
    settings: TrainingSettings = DEFAULT_TRAINING,
) -> HeadUpdate:
    """Minibatch SGD on the softmax cross-entropy (plus L2 on the standardized weights), from the given head."""
    if len(features) == 0:
        raise TrainingError("no local labelled data to train on")
    w, b = check_head(weight, bias, features.shape[1])
    w, b = w.copy(), b.copy()
    classes = w.shape[0]
    if labels.max() >= classes or labels.min() < 0:
        raise TrainingError(f"labels run from {labels.min()} to {labels.max()}; the head has {classes} classes")
    before = cross_entropy(w, b, features, labels)
    one_hot = np.eye(classes, dtype=np.float32)[labels]
    rng = np.random.default_rng(settings.seed)
    # logits = w x + b = (w * scale) z + (b + w mean) with z = (x - mean) / scale
    mean, scale = step_scaling(features, settings)
    standardized = (features - mean) / scale
    b = b + w @ mean
    w = w * scale
    for _ in range(settings.epochs):
        order = rng.permutation(len(features))
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            x = standardized[batch]
            error = (probabilities(w, b, x) - one_hot[batch]) / len(batch)
            w -= settings.learning_rate * (error.T @ x + settings.l2 * w)
            b -= settings.learning_rate * error.sum(axis=0)
    w = np.asarray(w / scale, dtype=np.float32)
    b = np.asarray(b - w @ mean, dtype=np.float32)
    return HeadUpdate(
        weight=w,
        bias=b,
        loss_before=before,
        loss=cross_entropy(w, b, features, labels),
        accuracy=accuracy(w, b, features, labels),
        examples=len(features),
    )
