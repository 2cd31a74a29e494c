"""MiniRocket-style edge models inside a classification task's build (see :mod:`models.classification`).

For a task whose plan carries a :class:`RocketPlan`:

- **Cloud**: the task's CNN ensemble blended with a full MiniRocket-style model (:func:`fit_cloud_rocket`,
  10,000 features, MiniRocket's ridge on standardized features; fp32 only). The rocket's scores are
  turned into probabilities by a softmax at a temperature, and the two are averaged with a weight; both
  the temperature and the weight minimize the negative log-likelihood of the out-of-fold predictions
  (each fold's CNN member and rocket fitted without that fold), so no test window chooses them.
- **Edge**: a MiniRocket-style model with a feature count and a share of features kept chosen by
  cross-validation on the training split (:func:`models.rocket.select_configuration`), **distilled** from
  the cloud model: its ridge head regresses a mix of the one-hot labels and the cloud's probabilities on
  the training windows (:func:`fit_distilled_head`); **structurally pruned**: the features that move the
  head least are removed with their bias, head column and, where unused, convolution channel, and the
  head is fitted again; its scores are **calibrated** by a temperature fitted on out-of-fold scores and
  folded into the head, so that the agent's confidence thresholds read real probabilities.

Ridge scores are regression outputs near ±1, far from calibrated logits: the temperatures fitted out of
fold are a few tenths (0.2 to 0.5 on the committed tasks), which the head's weights absorb.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.rocket import (
    RIDGE_ALPHAS,
    RidgeHead,
    RocketClassifier,
    RocketFrontEnd,
    Selection,
    fit_features,
    fit_rocket,
    pruned_indices,
    select_configuration,
    transform,
    with_head,
)

TEMPERATURES = tuple(float(value) for value in np.logspace(-3, 2, 501))
"""Softmax temperatures tried by :func:`fit_temperature` (log-spaced, 100 per decade)."""
BLEND_WEIGHTS = tuple(round(float(value), 2) for value in np.linspace(0.0, 1.0, 21))
"""Weights of the CNN ensemble in the cloud blend tried by :func:`choose_blend` (the rocket has the rest)."""


@dataclass(frozen=True)
class RocketPlan:
    """How a task's rocket models are fitted; ``quick`` builds use smaller feature counts."""

    cloud_features: int = 10_000
    """Features of the cloud's MiniRocket-style member."""
    feature_counts: tuple[int, ...] = (1_000, 3_000, 10_000)
    """Feature counts the edge model's cross-validation chooses from."""
    keeps: tuple[float, ...] = (0.5, 0.25, 0.1)
    """Shares of features the pruned edge model may keep."""
    tolerance: float = 0.01
    """The pruned model keeps the fewest features whose cross-validated accuracy is within this of the best."""
    teacher_share: float = 0.5
    """Weight of the cloud's probabilities in the edge head's ridge targets (the labels have the rest)."""
    selection_folds: int = 5

    @classmethod
    def quick(cls) -> RocketPlan:
        """A plan for quick builds (tests): small feature counts, three selection folds."""
        return cls(cloud_features=1_000, feature_counts=(420, 840), selection_folds=3)


def softmax(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Row-wise softmax of ``scores`` ``[n, classes]``."""
    shifted = np.asarray(scores, dtype=np.float64) - np.max(scores, axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return np.asarray(exponentials / exponentials.sum(axis=1, keepdims=True), dtype=np.float64)


def negative_log_likelihood(probabilities: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]) -> float:
    """Mean ``-log p(label)`` (probabilities floored at 1e-12)."""
    chosen = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(chosen, 1e-12))))


def fit_temperature(scores: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]) -> float:
    """The temperature of :data:`TEMPERATURES` whose ``softmax(scores / T)`` has the least NLL on ``labels``."""
    return min(TEMPERATURES, key=lambda value: negative_log_likelihood(softmax(scores / value), labels))


def blend(
    cnn: npt.NDArray[np.floating], rocket: npt.NDArray[np.floating], cnn_weight: float
) -> npt.NDArray[np.float64]:
    """``cnn_weight · cnn + (1 - cnn_weight) · rocket`` (both probabilities)."""
    return np.asarray(cnn_weight * cnn + (1.0 - cnn_weight) * rocket, dtype=np.float64)


def choose_blend(
    cnn: npt.NDArray[np.floating], rocket: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]
) -> float:
    """The CNN weight of :data:`BLEND_WEIGHTS` whose blend has the least NLL on ``labels`` (ties: the first)."""
    return min(BLEND_WEIGHTS, key=lambda weight: negative_log_likelihood(blend(cnn, rocket, weight), labels))


def rocket_scores(model: RocketClassifier, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The head's scores ``[n, classes]`` for windows ``[n, sample]`` (torch, no gradients)."""
    features = transform(model.front, np.asarray(windows, dtype=np.float32))
    with torch.no_grad():
        return np.asarray(model.head(torch.from_numpy(features)).numpy(), dtype=np.float64)


def with_temperature(model: RocketClassifier, temperature: float) -> RocketClassifier:
    """A copy of ``model`` whose head's scores are divided by ``temperature`` (folded into its weights)."""
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.head.weight.div_(temperature)
        scaled.head.bias.div_(temperature)
    return scaled.eval()


def fit_cloud_rocket(
    windows: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], n_classes: int, plan: RocketPlan, *, seed: int
) -> RocketClassifier:
    """The cloud's MiniRocket-style member: ``plan.cloud_features`` features, ridge on standardized features."""
    return fit_rocket(windows, labels, n_classes, n_features=plan.cloud_features, seed=seed, standardize=True)


def fit_distilled_head(
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    teacher: npt.NDArray[np.floating],
    *,
    share: float,
    alphas: Sequence[float] = RIDGE_ALPHAS,
) -> RidgeHead:
    """A ridge head regressing ``2 · ((1 - share) · one-hot + share · teacher) - 1`` from raw features.

    With ``share = 0`` this is ``RidgeClassifierCV``'s fit (targets ±1, alpha by leave-one-out over
    ``alphas``); the teacher's probabilities soften the targets where it doubts. One score per class,
    binary tasks included.
    """
    from sklearn.linear_model import RidgeCV

    data = np.asarray(features, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    n_classes = teacher.shape[1]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    targets = 2.0 * ((1.0 - share) * np.eye(n_classes)[labels] + share * teacher) - 1.0
    ridge = RidgeCV(alphas=list(alphas)).fit(data, targets)
    weight = np.atleast_2d(ridge.coef_)
    importance = np.sqrt(((weight * data.std(axis=0)) ** 2).sum(axis=0))
    return RidgeHead(
        weight=weight.astype(np.float32),
        bias=np.atleast_1d(ridge.intercept_).astype(np.float32),
        importance=importance,
        alpha=float(ridge.alpha_),
    )


@dataclass(frozen=True)
class RocketEdge:
    """The distilled edge model before pruning (not shipped) and after (scores not yet calibrated)."""

    unpruned: RocketClassifier
    pruned: RocketClassifier


def fit_edge(
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    teacher: npt.NDArray[np.floating],
    selection: Selection,
    plan: RocketPlan,
    *,
    seed: int,
) -> RocketEdge:
    """Fit the edge model's front end with ``selection``'s feature count, distil its head, prune, refit."""
    windows = np.asarray(windows, dtype=np.float32)
    front = RocketFrontEnd(fit_features(windows, selection.pruned_features, seed=seed)).eval()
    features = transform(front, windows)
    head = fit_distilled_head(features, labels, teacher, share=plan.teacher_share)
    chosen = pruned_indices(head.importance, selection.keep)
    small_front = RocketFrontEnd(front.features.select(chosen)).eval()
    small_head = fit_distilled_head(features[:, chosen], labels, teacher, share=plan.teacher_share)
    return RocketEdge(unpruned=with_head(front, head), pruned=with_head(small_front, small_head))


class BlendedCloud(nn.Module):
    """The cloud model: ``log(w · softmax(cnn) + (1 - w) · softmax(rocket scores))``.

    Returns log-probabilities, as :class:`models.networks.AveragedEnsemble` does, so that a softmax on top
    gives the blended probabilities back. A member of weight 0 is left out of the graph.
    """

    def __init__(self, cnn: nn.Module, rocket: RocketClassifier, cnn_weight: float) -> None:
        super().__init__()
        self.cnn = cnn if cnn_weight > 0.0 else None
        self.rocket = rocket if cnn_weight < 1.0 else None
        self.cnn_weight = float(cnn_weight)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Log of the blended class probabilities, ``[batch, classes]``."""
        parts = []
        if self.cnn is not None:
            parts.append(self.cnn(windows).softmax(-1) * self.cnn_weight)
        if self.rocket is not None:
            parts.append(self.rocket.logits(windows).softmax(-1) * (1.0 - self.cnn_weight))
        total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        return torch.log(total.clamp_min(1e-12))


@dataclass(frozen=True)
class RocketModels:
    """The rocket parts of a task's build, fitted by :func:`fit_rocket_models`."""

    cloud: BlendedCloud
    """The cloud model: the CNN members' average blended with the calibrated full rocket (log-probabilities)."""
    edge: RocketEdge
    """Fitted on all training windows; ``edge.pruned`` is the shipped model before calibration."""
    calibrated_edge: RocketClassifier
    """``edge.pruned`` with its temperature folded into the head: the shipped edge model."""
    fold_edges: list[RocketClassifier]
    """Per fold, the calibrated edge model fitted without that fold (for out-of-fold int8 figures)."""
    held_out: dict[str, npt.NDArray[np.int64]]
    """Out-of-fold predictions of the cloud (``cloud``) and of the fp32 edge model (``edge_fp32``)."""
    selection: Selection
    cloud_temperature: float
    cnn_weight: float
    edge_temperature: float

    def notes(self) -> dict[str, str]:
        """The figures a model card states."""
        selection = self.selection
        return {
            "cloud_temperature": f"{self.cloud_temperature:.4g}",
            "cnn_weight": f"{self.cnn_weight:.2f}",
            "blend_outcome": (
                " The CNN ensemble got weight 0 and is left out of the exported graph: the cloud model is the "
                "rocket alone."
                if self.cnn_weight == 0.0
                else " The rocket got weight 0 and is left out of the exported graph: the cloud model is the CNN "
                "ensemble alone."
                if self.cnn_weight == 1.0
                else ""
            ),
            "edge_temperature": f"{self.edge_temperature:.4g}",
            "edge_features": f"{len(self.edge.pruned.front.features):,} of {len(self.edge.unpruned.front.features):,}",
            "selection": (
                f"{selection.pruned_features:,} features requested, {selection.keep:.0%} kept "
                f"(cross-validated accuracy {selection.accuracy[(selection.pruned_features, selection.keep)]:.3f}, "
                f"best configuration {max(selection.accuracy.values()):.3f}, "
                f"best full model {selection.accuracy[(selection.n_features, 1.0)]:.3f} at "
                f"{selection.n_features:,} features)"
            ),
        }


def fit_rocket_models(
    train: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    classes: int,
    folds: Sequence[npt.NDArray[np.int64]],
    members: Sequence[nn.Module],
    plan: RocketPlan,
    *,
    seed: int,
    describe: Callable[[str], None] = lambda _: None,
    advance: Callable[[], None] = lambda: None,
) -> RocketModels:
    """Fit the cloud's rocket and blend, and the distilled, pruned, calibrated edge model.

    ``members[k]`` is the CNN (returning logits) trained without ``folds[k]``. Fold *k*'s rocket is fitted
    without it too; their out-of-fold predictions choose the cloud's temperature and CNN weight, and the fold
    edge models' out-of-fold scores the edge temperature. :func:`models.rocket.select_configuration` chooses
    the edge's feature count and the share kept, on the training split.
    """
    from models.networks import AveragedEnsemble
    from models.training import predict_probabilities

    if train.ndim != 2:
        raise ValueError(f"a rocket reads univariate windows [n, sample], not {train.shape}")
    fits = [np.setdiff1d(np.arange(len(train)), fold) for fold in folds]
    cnn_held_out = np.zeros((len(train), classes))
    rocket_held_out = np.zeros((len(train), classes))
    fold_rockets: list[RocketClassifier] = []
    for index, (fold, fit) in enumerate(zip(folds, fits, strict=True)):
        describe(f"cloud rocket {index + 1}/{len(folds)}")
        cnn_held_out[fold] = predict_probabilities(members[index], train[fold])
        fold_rockets.append(fit_cloud_rocket(train[fit], labels[fit], classes, plan, seed=seed * 1000 + index))
        rocket_held_out[fold] = rocket_scores(fold_rockets[-1], train[fold])
        advance()
    cloud_temperature = fit_temperature(rocket_held_out, labels)
    cnn_weight = choose_blend(cnn_held_out, softmax(rocket_held_out / cloud_temperature), labels)
    cloud_held_out = blend(cnn_held_out, softmax(rocket_held_out / cloud_temperature), cnn_weight)

    describe("edge: features and pruning by CV")
    selection = select_configuration(
        train,
        labels,
        classes,
        feature_counts=plan.feature_counts,
        keeps=plan.keeps,
        folds=plan.selection_folds,
        seed=seed,
        tolerance=plan.tolerance,
    )
    advance()
    edge_held_out = np.zeros((len(train), classes))
    fold_edges: list[RocketClassifier] = []
    for index, (fold, fit) in enumerate(zip(folds, fits, strict=True)):
        describe(f"edge rocket, fold {index + 1}/{len(folds)}")
        teacher = blend(
            predict_probabilities(members[index], train[fit]),
            softmax(rocket_scores(fold_rockets[index], train[fit]) / cloud_temperature),
            cnn_weight,
        )
        fold_edge = fit_edge(train[fit], labels[fit], teacher, selection, plan, seed=seed * 1000 + 100 + index)
        fold_edges.append(fold_edge.pruned)
        edge_held_out[fold] = rocket_scores(fold_edge.pruned, train[fold])
        advance()
    edge_temperature = fit_temperature(edge_held_out, labels)

    describe("cloud and edge, all training windows")
    cloud_rocket = with_temperature(
        fit_cloud_rocket(train, labels, classes, plan, seed=seed * 1000 + 999), cloud_temperature
    )
    cloud = BlendedCloud(AveragedEnsemble(list(members)).eval(), cloud_rocket, cnn_weight).eval()
    edge = fit_edge(train, labels, predict_probabilities(cloud, train), selection, plan, seed=seed * 1000 + 999)
    advance()
    return RocketModels(
        cloud=cloud,
        edge=edge,
        calibrated_edge=with_temperature(edge.pruned, edge_temperature),
        fold_edges=[with_temperature(model, edge_temperature) for model in fold_edges],
        held_out={
            "cloud": np.asarray(cloud_held_out.argmax(axis=1), dtype=np.int64),
            "edge_fp32": np.asarray(edge_held_out.argmax(axis=1), dtype=np.int64),
        },
        selection=selection,
        cloud_temperature=cloud_temperature,
        cnn_weight=cnn_weight,
        edge_temperature=edge_temperature,
    )
