"""The training libraries' kernels are capped at AVX2 in a build (``models.kernels``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.kernels import AVX2_CAPS, SWITCH, cpu_flags, kernel_caps

ROOT = Path(__file__).resolve().parents[2]
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


def test_every_cap_is_set_on_an_x86_64_processor_with_avx2() -> None:
    assert kernel_caps({}, machine="x86_64", flags=AVX2) == dict(AVX2_CAPS)
    assert kernel_caps({}, machine="AMD64", flags=AVX2 | {"avx512f"}) == dict(AVX2_CAPS)


def test_nothing_is_capped_elsewhere_or_when_switched_off() -> None:
    assert kernel_caps({}, machine="aarch64", flags=frozenset({"asimd"})) == {}
    assert kernel_caps({}, machine="x86_64", flags=frozenset({"sse4_2", "avx"})) == {}
    assert kernel_caps({SWITCH: "native"}, machine="x86_64", flags=AVX2) == {}
    assert kernel_caps({SWITCH: "portable"}, machine="x86_64", flags=AVX2) == {}


def test_a_cap_already_in_the_environment_is_kept() -> None:
    caps = kernel_caps({"ATEN_CPU_CAPABILITY": "default"}, machine="x86_64", flags=AVX2)
    assert "ATEN_CPU_CAPABILITY" not in caps
    assert set(caps) == set(AVX2_CAPS) - {"ATEN_CPU_CAPABILITY"}


def test_cpu_flags_reads_the_first_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse4_2", "avx2"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def _child(code: str, **environ: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != SWITCH and key not in AVX2_CAPS}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**env, **environ}, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


PINNED_CHILD = """
import os
from models.kernels import pin_kernels
pin_kernels()
print(os.environ.get("EDGEFLEET_KERNELS"), os.environ.get("MKL_CBWR"), os.environ.get("ATEN_CPU_CAPABILITY"))
"""


@pytest.mark.skipif(not kernel_caps({}), reason="the caps apply to x86-64 processors with AVX2 only")
def test_pin_kernels_restarts_the_command_with_the_caps() -> None:
    assert _child(PINNED_CHILD) == "portable AVX2 avx2"
    assert _child(PINNED_CHILD, EDGEFLEET_KERNELS="native") == "native None None"


TRAIN_CHILD = """
import hashlib, sys
import numpy as np
from models.kernels import pin_kernels
if sys.argv[1:] == ["pinned"]:
    pin_kernels()
import torch
from torch import nn
torch.manual_seed(0)
x = torch.from_numpy(np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32))
dense = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 64))
conv = nn.Sequential(nn.Conv1d(1, 8, 9, padding=4), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 1, 9, padding=4))
digest = hashlib.sha256()
for model, inputs in ((dense, x), (conv, x[:, None, :])):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(10):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), inputs)
        loss.backward()
        optimizer.step()
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.skipif(
    not kernel_caps({}) or "avx512f" in cpu_flags(), reason="the caps change nothing only on an AVX2 processor"
)
def test_on_an_avx2_processor_the_caps_train_the_same_weights() -> None:
    # What makes the builds committed from AVX2 processors valid under the caps; on AVX-512 the caps change
    # the kernels, which is their purpose.
    pytest.importorskip("torch")
    native = _child(TRAIN_CHILD.replace("sys.argv[1:]", '["native"]'), EDGEFLEET_KERNELS="native")
    pinned = _child(TRAIN_CHILD.replace("sys.argv[1:]", '["pinned"]'))
    assert native == pinned
