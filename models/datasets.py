"""Loaders for the public data sets the model tasks are trained on (bundled with their packages, no downloads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class WindowDataset:
    """Fixed-length windows with integer labels, split as the data set's publishers split it.

    Windows are raw (not normalized): normalization belongs to the model's manifest, so the training
    code applies exactly what the edge agent will apply.
    """

    name: str
    train_windows: npt.NDArray[np.float64]
    train_labels: npt.NDArray[np.int64]
    test_windows: npt.NDArray[np.float64]
    test_labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]

    @property
    def window_size(self) -> int:
        """Number of samples per window."""
        return int(self.train_windows.shape[1])

    def describe(self) -> str:
        """One line naming the data and its split, for manifests and model cards."""
        return f"{self.name}, official split: train {len(self.train_labels)} / test {len(self.test_labels)}"


def load_italy_power() -> WindowDataset:
    """ItalyPowerDemand (UCR archive, bundled with sktime): 24 hourly readings of Italy's electricity demand per day.

    The archive's class "1" is October–March and class "2" April–September; they map to labels
    0 ("winter") and 1 ("summer").
    """
    # Imported per loader: each data set's package is needed only by the tasks that train on it.
    from sktime.datasets import load_italy_power_demand

    def split(name: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        windows, labels = load_italy_power_demand(split=name, return_type="numpy2D")
        return np.asarray(windows, dtype=np.float64), np.asarray(labels).astype(np.int64) - 1

    train_windows, train_labels = split("train")
    test_windows, test_labels = split("test")
    return WindowDataset(
        name="sktime ItalyPowerDemand",
        train_windows=train_windows,
        train_labels=train_labels,
        test_windows=test_windows,
        test_labels=test_labels,
        class_names=("winter", "summer"),
    )
