"""Pin the training libraries' CPU kernels to AVX2, so that x86-64 processors with and without AVX-512 train alike.

torch, MKL, oneDNN, OpenBLAS and numpy each pick their kernels by the processor's instruction set, and
kernels of other vector widths add in another order: the same code and seed then train slightly different
weights on an AVX-512 Xeon and on an AVX2 EPYC, and a noisy choice (an anomaly task's edge recipe) can
fall the other way (``docs/decisions.md``). A build therefore runs with every library capped at AVX2,
which every x86-64 processor the project builds on has. On an AVX2 processor (an AMD EPYC) the caps
trained the same weights, byte for byte; only MKL's products of one row at a time rounded otherwise, which
moved litert-torch's calibration and so some ``.tflite`` bytes (not their figures). On an AVX-512 processor
they make the libraries run the AVX2 kernels.

The caps must be in the environment before numpy and torch load, so :func:`pin_kernels` re-executes the
process with them. ``EDGEFLEET_KERNELS=native`` keeps every library's own choice; a cap already in the
environment is kept. ONNX Runtime, which calibrates the int8 graphs, has no such cap: its float kernels
may still round differently on AVX-512, which can move an int8 scale by a rounding step.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

SWITCH = "EDGEFLEET_KERNELS"
"""``portable`` (set by :func:`pin_kernels` once the caps are in place) or ``native`` (no caps)."""
AVX2_CAPS: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorized kernels
    "MKL_CBWR": "AVX2",  # MKL's GEMMs (conditional numerical reproducibility), under torch's Linear layers
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN, under torch's convolutions
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS, under numpy, SciPy and scikit-learn
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's own AVX-512 loops
}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The processor's feature flags as Linux lists them (empty where there is no ``/proc/cpuinfo``)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def kernel_caps(
    environ: Mapping[str, str], *, machine: str | None = None, flags: frozenset[str] | None = None
) -> dict[str, str]:
    """The caps missing from ``environ`` on this machine: none off x86-64, without AVX2, or when switched off."""
    if environ.get(SWITCH) in ("native", "portable"):
        return {}
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return {}
    if "avx2" not in (cpu_flags() if flags is None else flags):
        return {}
    return {name: value for name, value in AVX2_CAPS.items() if name not in environ}


def pin_kernels() -> None:
    """Re-execute this command with the caps in its environment, unless they are there or do not apply.

    Call it only where the process was started as a build command (a ``__main__`` block, ``edgefleet models
    build``), first thing: the process is replaced and starts again from its command line.
    """
    caps = kernel_caps(os.environ)
    if not caps:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **caps, SWITCH: "portable"})
