"""Real recordings replayed by simulated devices, read from the copies that sktime bundles.

The ``.ts`` files are read directly (found without importing sktime, which is slow to import), so
replay costs no pandas and nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


class DatasetError(Exception):
    """A bundled dataset is missing or cannot be read."""


@dataclass(frozen=True, slots=True)
class LabelledSeries:
    """Equal-length univariate series with their class labels."""

    name: str
    values: npt.NDArray[np.float64]  # [series, length]
    labels: tuple[str, ...]


def sktime_data_dir() -> Path:
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("sktime is not installed; install the 'sim' extra to replay real recordings")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_ts(path: Path) -> tuple[list[list[float]], list[str]]:
    """Parse a univariate ``.ts`` file (sktime/UCR format): ``v1,v2,...:label`` per line after ``@data``."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    except StopIteration:
        raise DatasetError(f"{path} has no @data section") from None
    series: list[list[float]] = []
    labels: list[str] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        body, _, label = line.rpartition(":")
        try:
            series.append([float(value) for value in body.split(",")])
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: {exc}") from exc
        labels.append(label.strip())
    return series, labels


ITALY_POWER_LABELS = {"1": "winter", "2": "summer"}


def italy_power_demand(split: str = "test") -> LabelledSeries:
    """ItalyPowerDemand (UCR): a day of hourly demand per series; 1 = October–March, 2 = April–September."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}")
    path = sktime_data_dir() / "ItalyPowerDemand" / f"ItalyPowerDemand_{split.upper()}.ts"
    series, labels = read_ts(path)
    return LabelledSeries(
        name=f"ItalyPowerDemand/{split}",
        values=np.asarray(series, dtype=np.float64),
        labels=tuple(ITALY_POWER_LABELS[label] for label in labels),
    )
