from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edgefleet.federation import Fleet, prepare_fleet

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "quantized"
BACKBONE_INT8 = COMMITTED / "federated_plaid_backbone_int8.onnx"
BACKBONE_FP32 = COMMITTED / "federated_plaid_backbone_fp32.onnx"
INITIAL_HEAD = COMMITTED / "federated_plaid_head_initial.npz"
CALIBRATION = COMMITTED / "federated_plaid_calibration.npy"
DESCRIPTION = COMMITTED / "federated_plaid.json"
CLASSES = 11


def synthetic_windows(labels: npt.NDArray[np.int64], *, seed: int) -> npt.NDArray[np.float32]:
    """512-sample windows whose frequency and shape depend on the class, z-normalized as the model expects."""
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 512
    rows = []
    for label in labels:
        wave = np.sin(2 * np.pi * (3 + 4 * label) * t) + (label % 3) * np.sign(np.sin(2 * np.pi * 2 * t))
        wave = wave + rng.normal(scale=0.2, size=512)
        rows.append((wave - wave.mean()) / (wave.std() + 1e-8))
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    """Three devices with 40 synthetic labelled windows each, every class on every device."""
    partitions = []
    for device in range(3):
        labels = np.arange(40, dtype=np.int64) % CLASSES
        partitions.append((synthetic_windows(labels, seed=device), labels))
    return prepare_fleet(tmp_path / "fleet", partitions)
