"""The training libraries' kernels are capped at AVX2 in a build (``models.kernels``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.kernels import PORTABLE_CAPS, SWITCH, cpu_flags, kernel_caps

ROOT = Path(__file__).resolve().parents[2]
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


def test_every_cap_is_set_on_an_x86_64_processor_with_avx2() -> None:
    assert kernel_caps({}, machine="x86_64", flags=AVX2) == dict(PORTABLE_CAPS)
    assert kernel_caps({}, machine="AMD64", flags=AVX2 | {"avx512f"}) == dict(PORTABLE_CAPS)


def test_nothing_is_capped_elsewhere_or_when_switched_off() -> None:
    assert kernel_caps({}, machine="aarch64", flags=frozenset({"asimd"})) == {}
    assert kernel_caps({}, machine="x86_64", flags=frozenset({"sse4_2", "avx"})) == {}
    assert kernel_caps({SWITCH: "native"}, machine="x86_64", flags=AVX2) == {}
    assert kernel_caps({SWITCH: "portable"}, machine="x86_64", flags=AVX2) == {}


def test_a_cap_already_in_the_environment_is_kept() -> None:
    caps = kernel_caps({"ATEN_CPU_CAPABILITY": "default"}, machine="x86_64", flags=AVX2)
    assert "ATEN_CPU_CAPABILITY" not in caps
    assert set(caps) == set(PORTABLE_CAPS) - {"ATEN_CPU_CAPABILITY"}


def test_cpu_flags_reads_the_first_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse4_2", "avx2"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def _child(code: str, **environ: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != SWITCH and key not in PORTABLE_CAPS}
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
    assert _child(PINNED_CHILD) == "portable COMPATIBLE avx2"
    assert _child(PINNED_CHILD, EDGEFLEET_KERNELS="native") == "native None None"


REFERENCE_FINGERPRINT = "c87037e32b9391ab"
"""``fingerprint()`` under the caps, measured on an Intel Xeon with AVX-512 (the cards record it per build).

The caps exist to make this the same on every x86-64 processor with AVX2, Intel's and AMD's alike: a
failure here means a build on this processor trains other bytes than the committed ones.
"""


@pytest.mark.skipif(not kernel_caps({}), reason="the caps apply to x86-64 processors with AVX2 only")
def test_under_the_caps_every_x86_64_processor_trains_the_reference_bits() -> None:
    code = "from models.kernels import fingerprint, pin_kernels\npin_kernels()\nprint(fingerprint())"
    assert _child(code) == REFERENCE_FINGERPRINT
    # Without the caps the libraries choose by the processor; MKL's AVX2 branch alone already differs.
    assert _child(code, MKL_CBWR="AVX2") != REFERENCE_FINGERPRINT


def test_the_fingerprint_leaves_the_random_state_and_threads_alone() -> None:
    torch = pytest.importorskip("torch")
    from models.kernels import caps_in_force, fingerprint

    torch.manual_seed(7)
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    first = fingerprint()
    assert torch.equal(state, torch.get_rng_state())
    assert torch.get_num_threads() == threads
    assert first == fingerprint() and len(first) == 16
    assert caps_in_force({"MKL_CBWR": "COMPATIBLE", "OTHER": "x"}) == {"MKL_CBWR": "COMPATIBLE"}
