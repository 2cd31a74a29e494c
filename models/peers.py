"""Well-known peers, fitted on the training split and scored on the test split by the same build.

MiniRocket (Dempster et al. 2021; sktime's ``RocketClassifier`` with the MiniRocket transform and a
ridge classifier) and 1-nearest-neighbour with dynamic time warping (10 % band), both on exactly the
windows the models see. Both run on numba, which installs beside numpy 2.4 (numba 0.68), so they run in the
training environment itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class PeerResult:
    """A peer's test accuracy and how long fitting and predicting took (one thread)."""

    description: str
    test_accuracy: float
    seconds: float
    environment: str


def _panel(windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """sktime's ``numpy3D`` layout: ``[instance, channel, sample]``."""
    data = np.asarray(windows, dtype=np.float64)
    return data[:, np.newaxis, :] if data.ndim == 2 else data


def run_peers(
    train: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    test: npt.NDArray[np.float32],
    test_labels: npt.NDArray[np.int64],
    *,
    seed: int,
) -> dict[str, PeerResult]:
    """MiniRocket and 1-NN DTW on the same split; keys ``peer_minirocket`` and ``peer_1nn_dtw``."""
    from sktime.classification.distance_based import KNeighborsTimeSeriesClassifier
    from sktime.classification.kernel_based import RocketClassifier

    environment = f"training environment: sktime {metadata.version('sktime')}, numba {metadata.version('numba')}"
    fit, query = _panel(train), _panel(test)
    results = {}
    peers = {
        "peer_minirocket": (
            "MiniRocket (sktime, 10,000 features, ridge)",
            RocketClassifier(rocket_transform="minirocket", random_state=seed, n_jobs=1),
        ),
        "peer_1nn_dtw": (
            "1-NN, DTW with a 10 % Sakoe-Chiba band (sktime)",
            # The band keeps PLAID's 537 × 537 comparisons of 512 samples to minutes; it is the usual
            # constrained-DTW baseline and rarely loses accuracy to full-window DTW on the UCR archive.
            KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw", distance_params={"window": 0.1}, n_jobs=1),
        ),
    }
    for key, (description, classifier) in peers.items():
        started = time.perf_counter()
        predictions = np.asarray(classifier.fit(fit, labels).predict(query))
        results[key] = PeerResult(
            description=description,
            test_accuracy=float(np.mean(predictions.astype(np.int64) == test_labels)),
            seconds=time.perf_counter() - started,
            environment=environment,
        )
    return results
