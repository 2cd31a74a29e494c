"""The anomaly score every EdgeFleet window model carries in its graph.

The score is the reconstruction error of the normalized window outside a low-dimensional subspace of
normal windows (a linear autoencoder fitted by SVD), plus a term for windows that are not unit-variance
after normalization. It is divided by the training windows' 99th percentile, so 1.0 means "as unusual as
the most unusual 1 % of training windows".

A linear subspace was chosen over a small neural autoencoder because, fitted on a few dozen windows, the
autoencoder memorized them: in 5-fold cross-validation on ItalyPowerDemand's 67 training windows its
threshold flagged about a third of held-out clean windows, the subspace's about one in twenty, and both
caught every spike and nearly every dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class SubspaceScorer:
    """Fitted constants of the anomaly score; ``score`` is the numpy reference of the in-graph computation."""

    residual_projector: npt.NDArray[np.float32]
    """``I - V Vᵀ`` for the ``components`` leading right-singular vectors ``V``; maps a window to its residual."""
    scale: float
    """Reciprocal of the training windows' 99th-percentile raw score."""
    components: int

    def raw_score(self, normalized: FloatArray) -> npt.NDArray[np.float64]:
        """Score before scaling, for windows already z-normalized, shape ``[batch, window]``."""
        windows = np.asarray(normalized, dtype=np.float64)
        residual = windows @ self.residual_projector.astype(np.float64)
        # A z-normalized window has mean square 1; a constant window normalizes to zeros and would otherwise
        # have zero residual, so the departure from unit variance counts too.
        variance_error = (1.0 - np.mean(windows**2, axis=-1)) ** 2
        return np.asarray(np.mean(residual**2, axis=-1) + variance_error)

    def score(self, normalized: FloatArray) -> npt.NDArray[np.float64]:
        """Scaled score: 1.0 is the training windows' 99th percentile."""
        return self.raw_score(normalized) * self.scale


def fit_subspace_scorer(normalized: FloatArray, *, components: int, quantile: float = 0.99) -> SubspaceScorer:
    """Fit the subspace and the scale on z-normalized training windows, shape ``[batch, window]``."""
    windows = np.asarray(normalized, dtype=np.float64)
    if not 0 < components < windows.shape[1]:
        raise ValueError(f"components must be between 1 and {windows.shape[1] - 1}, got {components}")
    # No centering across windows: z-normalized windows already have zero mean, and the mean daily shape
    # belongs in the subspace rather than in an offset the graph would have to subtract.
    _, _, right = np.linalg.svd(windows, full_matrices=False)
    basis = right[:components].T
    projector = (np.eye(windows.shape[1]) - basis @ basis.T).astype(np.float32)
    unscaled = SubspaceScorer(residual_projector=projector, scale=1.0, components=components)
    reference = float(np.quantile(unscaled.raw_score(windows), quantile))
    return SubspaceScorer(residual_projector=projector, scale=1.0 / reference, components=components)
