"""Scoring of anomaly detectors on a labelled series, and the matrix-profile peer (no torch).

A detector scores sliding windows; a reading's score is the highest score of the windows that contain it,
so a detector is judged per reading against the labels: ROC-AUC over all readings, and the best F1 over all
thresholds (the usual figures of the UCR anomaly archive's papers, neither needing a chosen threshold).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sliding_windows(series: npt.ArrayLike, window: int, hop: int = 1) -> FloatArray:
    """Windows ``[count, window]`` of ``series`` starting every ``hop`` readings (a view when possible)."""
    values = np.asarray(series, dtype=np.float64)
    return np.lib.stride_tricks.sliding_window_view(values, window)[::hop]


def reading_scores(window_scores: npt.ArrayLike, window: int) -> FloatArray:
    """Per reading, the highest score among the hop-1 windows that contain it."""
    scores = np.asarray(window_scores, dtype=np.float64)
    padded = np.concatenate([np.full(window - 1, -np.inf), scores, np.full(window - 1, -np.inf)])
    return np.asarray(np.lib.stride_tricks.sliding_window_view(padded, window).max(axis=1))


@dataclass(frozen=True)
class DetectionFigures:
    """How well per-reading scores separate anomalous readings from normal ones."""

    roc_auc: float
    best_f1: float


def detection_figures(scores: npt.ArrayLike, labels: npt.NDArray[np.int64]) -> DetectionFigures:
    """ROC-AUC and best F1 of per-reading ``scores`` against 0/1 ``labels``."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score

    values = np.asarray(scores, dtype=np.float64)
    precision, recall, _ = precision_recall_curve(labels, values)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return DetectionFigures(roc_auc=float(roc_auc_score(labels, values)), best_f1=float(f1.max()))


@dataclass(frozen=True)
class DiscordResult:
    """The matrix-profile peer's figures."""

    description: str
    figures: DetectionFigures
    seconds: float
    environment: str


def matrix_profile_discords(
    train: FloatArray,
    test: FloatArray,
    labels: npt.NDArray[np.int64],
    window: int,
    *,
    scored: npt.NDArray[np.bool_] | None = None,
) -> dict[str, DiscordResult]:
    """Matrix-profile discords (stumpy's STOMP): self-join on the test stretch; join with the normal stretch.

    A subsequence's score is the z-normalized distance to its nearest neighbour: in the self-join, among
    the test stretch's other subsequences (the classic discord, unsupervised); in the join, among the
    training stretch's (the same semi-supervised setting as the autoencoders). ``scored`` limits the
    figures to some readings (all by default).
    """
    keep = np.ones(len(labels), dtype=bool) if scored is None else scored
    import stumpy

    environment = f"training environment: stumpy {metadata.version('stumpy')}"
    results = {}
    started = time.perf_counter()
    self_join = np.asarray(stumpy.stump(test, m=window)[:, 0], dtype=np.float64)
    results["peer_stomp_discord"] = DiscordResult(
        "STOMP self-join discord (stumpy), distance to the nearest other subsequence of the test stretch",
        detection_figures(reading_scores(self_join, window)[keep], labels[keep]),
        time.perf_counter() - started,
        environment,
    )
    started = time.perf_counter()
    joined = np.asarray(stumpy.stump(test, m=window, T_B=train, ignore_trivial=False)[:, 0], dtype=np.float64)
    results["peer_stomp_join"] = DiscordResult(
        "STOMP join with the training stretch (stumpy), distance to the nearest normal subsequence",
        detection_figures(reading_scores(joined, window)[keep], labels[keep]),
        time.perf_counter() - started,
        environment,
    )
    return results
