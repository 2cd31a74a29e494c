"""Pin the training libraries' CPU kernels, so that x86-64 processors of either vendor train alike.

torch, MKL, oneDNN, OpenBLAS and numpy each pick their kernels by the processor, and kernels of other
vector widths add in another order: the same code and seed then train slightly different weights on an
AVX-512 Xeon and on an AVX2 EPYC, and a noisy choice (an anomaly task's edge recipe) can fall the other way
(``docs/decisions.md``). A build therefore runs with torch's own kernels, oneDNN, OpenBLAS and numpy capped
at AVX2, which every x86-64 processor the project builds on has, and with MKL on its ``COMPATIBLE`` branch:
MKL's AVX2 branch is reproducible across Intel processors only (on others MKL takes its ``AUTO`` branch), and
a Xeon under an AVX2 cap trained other autoencoders than an EPYC under the same cap. ``COMPATIBLE`` (SSE2)
is the only fixed branch MKL supports on non-Intel processors (with ``AUTO``, which follows the processor);
that it computes the same bits on Intel and AMD is the claim the fingerprint test checks. It made an
autoencoder build about 1.5 times slower.

The caps must be in the environment before numpy and torch load, so :func:`pin_kernels` re-executes the
process with them. ``EDGEFLEET_KERNELS=native`` keeps every library's own choice; a cap already in the
environment is kept. :func:`fingerprint` digests a small training run under the kernels in force; a card
records it, so that a rebuild on a machine of another fingerprint is known to train other bytes. ONNX
Runtime, which calibrates the int8 graphs, has no such cap: its float kernels may still round differently
on AVX-512, which can move an int8 scale by a rounding step.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

SWITCH = "EDGEFLEET_KERNELS"
"""``portable`` (set by :func:`pin_kernels` once the caps are in place) or ``native`` (no caps)."""
PORTABLE_CAPS: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorized kernels
    "MKL_CBWR": "COMPATIBLE",  # MKL's GEMMs under torch's Linear layers: its one fixed branch on any vendor
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
    return {name: value for name, value in PORTABLE_CAPS.items() if name not in environ}


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


def caps_in_force(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caps set in this process's environment, by :func:`pin_kernels` or by hand (none where none is set)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in PORTABLE_CAPS if name in environ}


def fingerprint_parts() -> dict[str, str]:
    """Three parts digested alone (8 hex digits each), then ``"all"``: :func:`fingerprint`.

    ``dense``: a dense network trains ten AdamW steps on one thread and predicts one window (MKL's GEMMs,
    torch's own kernels); ``convolution``: the same for a small CNN (oneDNN's convolutions); ``solve``: a
    ridge solve in numpy and SciPy (OpenBLAS). Where two machines' fingerprints differ, the parts tell which
    library computed other bits. The process's random state and thread count are left as they were.
    """
    import hashlib

    import numpy as np
    import torch
    from scipy import linalg
    from torch import nn

    digest = hashlib.sha256()
    parts: dict[str, str] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            data = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
            inputs = torch.from_numpy(data)
            dense = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 64))
            conv = nn.Sequential(
                nn.Conv1d(1, 8, 9, padding=4), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 1, 9, padding=4)
            )
            for name, model, batch in (("dense", dense, inputs), ("convolution", conv, inputs[:, None, :])):
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                for _ in range(10):
                    optimizer.zero_grad()
                    loss = nn.functional.mse_loss(model(batch), batch)
                    torch.autograd.backward(loss)
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    chunks = [model(batch[:1]).numpy().tobytes()]
                chunks.extend(tensor.numpy().tobytes() for tensor in model.state_dict().values())
                part = hashlib.sha256()
                for chunk in chunks:
                    digest.update(chunk)
                    part.update(chunk)
                parts[name] = part.hexdigest()[:8]
    finally:
        torch.set_num_threads(threads)
    features = np.asarray(data, dtype=np.float64)
    gram = features.T @ features + np.eye(features.shape[1])
    solved = linalg.solve(gram, features.T @ features[:, :4], assume_a="pos").tobytes()
    digest.update(solved)
    parts["solve"] = hashlib.sha256(solved).hexdigest()[:8]
    parts["all"] = digest.hexdigest()[:16]
    return parts


def fingerprint() -> str:
    """A digest of a small, seeded training run and solve under the kernels in force (16 hex digits).

    Two machines with the same fingerprint ran :func:`fingerprint_parts`' work the same to the bit; a build's
    card records it.
    """
    return fingerprint_parts()["all"]


def kernel_record() -> dict[str, str]:
    """What a card records of the kernels: the caps in force, :func:`fingerprint` and its parts."""
    parts = fingerprint_parts()
    return {
        **caps_in_force(),
        "fingerprint": parts.pop("all"),
        **{f"fingerprint_{name}": digest for name, digest in parts.items()},
    }


if __name__ == "__main__":
    pin_kernels()
    for name, digest in fingerprint_parts().items():
        print(f"{name:12} {digest}")
