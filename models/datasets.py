"""Loaders for the public data sets the model tasks are trained on (bundled with their packages, no downloads)."""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class WindowDataset:
    """Fixed-length windows with integer labels, split as the data set's publishers split it.

    Windows are raw (not normalized): normalization belongs to the model's manifest, so the training
    code applies exactly what the edge agent will apply.
    """

    name: str
    train_windows: npt.NDArray[Any]
    """``[n, sample]`` or ``[n, channel, sample]`` floats; or an object array of 1-D series of unequal lengths."""
    train_labels: npt.NDArray[np.int64]
    test_windows: npt.NDArray[Any]
    test_labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]

    @property
    def window_size(self) -> int:
        """Number of samples per window (per channel)."""
        return int(self.train_windows.shape[-1])

    @property
    def channels(self) -> int:
        """Channels per window: 1 for ``[n, sample]`` windows, else the middle axis of ``[n, channel, sample]``."""
        return 1 if self.train_windows.ndim == 2 else int(self.train_windows.shape[1])

    def describe(self) -> str:
        """One line naming the data and its split, for manifests and model cards."""
        split = {
            "scikit-learn digits": "first half / second half",
            "espeak-ng keywords in noise": "split by voice",
            "simulated camera frames": "split by scene seed",
        }.get(self.name, "official split")
        return f"{self.name}, {split}: train {len(self.train_labels)} / test {len(self.test_labels)}"


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


def _sktime_split(loader: Any, *, squeeze: bool) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any]]:
    windows, labels = loader(return_type="numpy3D")
    windows = np.asarray(windows, dtype=np.float64)
    return (windows[:, 0, :] if squeeze else windows), np.asarray(labels)


def _encode(
    train: npt.NDArray[Any], test: npt.NDArray[Any], names: tuple[str, ...]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    index = {name: position for position, name in enumerate(names)}
    return (
        np.asarray([index[str(label)] for label in train], dtype=np.int64),
        np.asarray([index[str(label)] for label in test], dtype=np.int64),
    )


def load_basic_motions() -> WindowDataset:
    """BasicMotions (UEA archive, bundled with sktime): 10 s at 10 Hz of a wrist-worn accelerometer and gyroscope.

    Windows have shape ``[6, 100]``: channels 0–2 the accelerometer's x, y, z, 3–5 the gyroscope's.
    """
    from sktime.datasets import load_basic_motions as load

    train_windows, train_labels = _sktime_split(lambda **kw: load(split="train", **kw), squeeze=False)
    test_windows, test_labels = _sktime_split(lambda **kw: load(split="test", **kw), squeeze=False)
    names = ("badminton", "running", "standing", "walking")
    train_codes, test_codes = _encode(train_labels, test_labels, names)
    return WindowDataset("sktime BasicMotions", train_windows, train_codes, test_windows, test_codes, names)


def load_acsf1() -> WindowDataset:
    """ACSF1 (UCR archive, bundled with sktime): one day of an appliance's power draw, 1460 readings.

    Ten appliance types, ten series each per split; the archive's classes 0–9 keep their order here.
    """
    from sktime.datasets import load_acsf1 as load

    train_windows, train_labels = _sktime_split(lambda **kw: load(split="train", **kw), squeeze=True)
    test_windows, test_labels = _sktime_split(lambda **kw: load(split="test", **kw), squeeze=True)
    names = tuple(str(code) for code in range(10))
    train_codes, test_codes = _encode(train_labels, test_labels, names)
    return WindowDataset("sktime ACSF1", train_windows, train_codes, test_windows, test_codes, names)


@functools.cache  # converting sktime's nested frame takes seconds
def load_plaid() -> WindowDataset:
    """PLAID (UCR archive, bundled with sktime): current drawn by an appliance as it runs, 11 appliance types.

    Series have unequal lengths (100 to 1344 samples), so the windows are an object array of 1-D series;
    the task's preprocessing makes them one length. The archive's classes "0"–"10" keep their numbers.
    """
    from sktime.datasets import load_plaid as load

    def split(name: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        frame, labels = load(split=name)
        series = np.empty(len(frame), dtype=object)
        for row in range(len(frame)):
            series[row] = np.asarray(frame.iloc[row, 0], dtype=np.float64)
        return series, np.asarray(labels)

    train_windows, train_labels = split("train")
    test_windows, test_labels = split("test")
    names = tuple(str(code) for code in range(11))
    train_codes, test_codes = _encode(train_labels, test_labels, names)
    return WindowDataset("sktime PLAID", train_windows, train_codes, test_windows, test_codes, names)


@dataclass(frozen=True)
class LabelledSeries:
    """One long series for anomaly detection: a normal stretch to train on, a labelled stretch to score."""

    name: str
    train: npt.NDArray[np.float64]
    """Normal readings only."""
    test: npt.NDArray[np.float64]
    test_labels: npt.NDArray[np.int64]
    """1 where a reading belongs to an anomaly, else 0; one per test reading."""
    split: str
    """How train and test were separated, for cards."""

    def describe(self) -> str:
        """One line naming the data and its split."""
        return f"{self.name}: train {len(self.train)} normal readings / test {len(self.test)} ({self.split})"


MITDB_TRAIN = 2500
"""Readings of mitdb's normal start used for training; fixed before looking at where the anomaly lies."""


def load_mitdb() -> LabelledSeries:
    """sktime's bundled mitdb excerpt: 7500 ECG readings with one labelled abnormal run (352 readings).

    sktime ships the file but no loader; it is read from the installed package. The series has no official
    split: its first third (2500 readings, labelled normal) trains, the rest is scored.
    """
    path = resources.files("sktime.datasets").joinpath("data", "mitdb", "mitdb.csv")
    table = np.loadtxt(str(path), delimiter=",", skiprows=1)
    values, labels = table[:, 0], table[:, 1].astype(np.int64)
    if labels[:MITDB_TRAIN].any():
        raise ValueError("mitdb's training stretch is labelled abnormal; the split is wrong for this file")
    return LabelledSeries(
        name="sktime mitdb (MIT-BIH arrhythmia excerpt)",
        train=values[:MITDB_TRAIN],
        test=values[MITDB_TRAIN:],
        test_labels=labels[MITDB_TRAIN:],
        split=f"first {MITDB_TRAIN} readings train, the rest test; no official split",
    )


AEON_ENVIRONMENT = Path(__file__).resolve().parent.parent / ".venv-aeon"
_AEON_DUMP = (
    "import json, sys; from aeon.datasets import load_kdd_tsad_135 as load;"
    "train, _ = load(split='train'); test, labels = load(split='test');"
    "json.dump({'train': train.tolist(), 'test': test.tolist(), 'labels': labels.tolist()}, sys.stdout)"
)


@functools.cache  # a subprocess in another environment: once per process is enough
def load_kdd_tsad_135() -> LabelledSeries:
    """UCR anomaly archive series 135 (InternalBleeding16), bundled with aeon, read through ``.venv-aeon``.

    aeon pins numba below 0.64 and so numpy below 2.4; it lives in its own environment
    (``python -m models.environments aeon``), which hands the series over as JSON. The archive's split:
    1200 normal readings to train on, 7501 to score with one labelled anomaly.
    """
    python = AEON_ENVIRONMENT / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(f"{python} is missing: make it with 'python -m models.environments aeon'")
    result = subprocess.run([str(python), "-c", _AEON_DUMP], capture_output=True, text=True, check=True, timeout=300)
    data = json.loads(result.stdout)
    return LabelledSeries(
        name="aeon KDD-TSAD_135 (UCR anomaly archive, InternalBleeding16)",
        train=np.asarray(data["train"], dtype=np.float64),
        test=np.asarray(data["test"], dtype=np.float64),
        test_labels=np.asarray(data["labels"], dtype=np.int64),
        split="the archive's split",
    )


def load_digits() -> WindowDataset:
    """scikit-learn's digits: 1797 handwritten digits, 8 × 8 pixels of 0–16, as ``[row, column]`` windows.

    There is no official split; this is the one of scikit-learn's own classification example: the first
    half (898 images) trains, the second half (899) tests.
    """
    from sklearn.datasets import load_digits as load

    images, labels = load(return_X_y=True)
    windows = np.asarray(images, dtype=np.float64).reshape(-1, 8, 8)
    codes = np.asarray(labels, dtype=np.int64)
    half = len(windows) // 2
    names = tuple(str(digit) for digit in range(10))
    return WindowDataset("scikit-learn digits", windows[:half], codes[:half], windows[half:], codes[half:], names)


KEYWORDS_TRAIN_PER_LABEL = 160
KEYWORDS_TEST_PER_LABEL = 60


@functools.cache  # synthesis takes half a minute; a process (a test session, a build) needs it once
def load_keywords() -> WindowDataset:
    """Spoken keywords synthesized with espeak-ng and mixed with noise (:mod:`models.speech`), one-second clips.

    The split is by voice: training clips use half of espeak-ng's voice variants, test clips the other half.
    """
    from models.speech import LABELS, TEST_VARIANTS, TRAIN_VARIANTS, keyword_clips

    train = keyword_clips(TRAIN_VARIANTS, KEYWORDS_TRAIN_PER_LABEL, seed=1)
    test = keyword_clips(TEST_VARIANTS, KEYWORDS_TEST_PER_LABEL, seed=2)
    return WindowDataset("espeak-ng keywords in noise", train.clips, train.labels, test.clips, test.labels, LABELS)
