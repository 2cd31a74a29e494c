"""Real recordings replayed by simulated devices, read from the copies that sktime bundles.

The ``.ts`` files are read directly (found without importing sktime, which is slow to import), so
replay costs no pandas and nothing is downloaded. Each dataset is parsed once per process: a fleet of
thousands of devices shares one copy.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from firmware_sim.errors import DatasetError

__all__ = [
    "ACSF1_CLASSES",
    "BASIC_MOTIONS_CHANNELS",
    "ITALY_POWER_LABELS",
    "PLAID_CLASSES",
    "DatasetError",
    "LabelledRecordings",
    "LabelledSeries",
    "acsf1",
    "basic_motions",
    "italy_power_demand",
    "plaid",
    "read_ts",
    "sktime_data_dir",
]

Series = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LabelledSeries:
    """Equal-length univariate series with their class labels."""

    name: str
    values: npt.NDArray[np.float64]  # [series, length]
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LabelledRecordings:
    """Recordings of any length and channel count, with their class labels.

    ``recordings[i]`` has shape ``[channels, length_i]``; ``channels`` names the channels.
    """

    name: str
    recordings: tuple[Series, ...]
    labels: tuple[str, ...]
    channels: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.labels)))

    def of_class(self, label: str) -> tuple[int, ...]:
        """Indices of the recordings of one class."""
        return tuple(index for index, each in enumerate(self.labels) if each == label)


def sktime_data_dir() -> Path:
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("sktime is not installed; install the 'sim' extra to replay real recordings")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_ts(path: Path) -> tuple[list[list[list[float]]], list[str]]:
    """Parse a ``.ts`` file (sktime/UCR format): ``dim1:dim2:...:label`` per line after ``@data``,
    each dimension a comma-separated series. Returns ``[series][dimension][values]`` and the labels."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    except StopIteration:
        raise DatasetError(f"{path} has no @data section") from None
    series: list[list[list[float]]] = []
    labels: list[str] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        *dimensions, label = line.split(":")
        try:
            series.append([[float(value) for value in dimension.split(",")] for dimension in dimensions])
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: {exc}") from exc
        labels.append(label.strip())
    return series, labels


def _path(folder: str, split: str) -> Path:
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}")
    return sktime_data_dir() / folder / f"{folder}_{split.upper()}.ts"


ITALY_POWER_LABELS = {"1": "winter", "2": "summer"}


@functools.cache
def italy_power_demand(split: str = "test") -> LabelledSeries:
    """ItalyPowerDemand (UCR): a day of hourly demand per series; 1 = October–March, 2 = April–September."""
    series, labels = read_ts(_path("ItalyPowerDemand", split))
    return LabelledSeries(
        name=f"ItalyPowerDemand/{split}",
        values=np.asarray([each[0] for each in series], dtype=np.float64),
        labels=tuple(ITALY_POWER_LABELS[label] for label in labels),
    )


PLAID_CLASSES = (
    "air_conditioner",
    "compact_fluorescent_lamp",
    "fan",
    "fridge",
    "hairdryer",
    "heater",
    "incandescent_light_bulb",
    "laptop",
    "microwave",
    "vacuum",
    "washing_machine",
)


@functools.cache
def plaid(split: str = "train") -> LabelledRecordings:
    """PLAID (UCR edition): current drawn by 11 kinds of appliance from switch-on into steady state,
    in amperes, 100 to 1,344 samples per recording; classes in :data:`PLAID_CLASSES`."""
    series, labels = read_ts(_path("PLAID", split))
    return LabelledRecordings(
        name=f"PLAID/{split}",
        recordings=tuple(np.asarray(each, dtype=np.float64) for each in series),
        labels=tuple(PLAID_CLASSES[int(label)] for label in labels),
        channels=("current",),
    )


ACSF1_CLASSES = (
    "mobile_phone",
    "coffee_machine",
    "computer_station",
    "fridge_freezer",
    "hifi_system",
    "lamp_cfl",
    "laptop",
    "microwave_oven",
    "printer",
    "television",
)


@functools.cache
def acsf1(split: str = "train") -> LabelledRecordings:
    """ACS-F1 (UCR edition): appliance power signatures, 1,460 z-normalized samples each; classes in
    :data:`ACSF1_CLASSES`. Replay maps them onto each class's typical watts."""
    series, labels = read_ts(_path("ACSF1", split))
    return LabelledRecordings(
        name=f"ACSF1/{split}",
        recordings=tuple(np.asarray(each, dtype=np.float64) for each in series),
        labels=tuple(ACSF1_CLASSES[int(label)] for label in labels),
        channels=("power",),
    )


BASIC_MOTIONS_CHANNELS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")


@functools.cache
def basic_motions(split: str = "train") -> LabelledRecordings:
    """BasicMotions: a wrist-worn accelerometer and gyroscope at 10 Hz, 10 s per recording, while
    standing, walking, running or playing badminton."""
    series, labels = read_ts(_path("BasicMotions", split))
    return LabelledRecordings(
        name=f"BasicMotions/{split}",
        recordings=tuple(np.asarray(each, dtype=np.float64) for each in series),
        labels=tuple(label.lower() for label in labels),
        channels=BASIC_MOTIONS_CHANNELS,
    )
