"""Conversion of an edge model for the runtimes other than ONNX Runtime: OpenVINO IR and LiteRT ``.tflite``.

OpenVINO reads the int8 QDQ ``.onnx`` itself and keeps its quantization (QDQ pairs become FakeQuantize),
so its IR is the very same model. LiteRT needs a ``.tflite``, which ``litert-torch`` makes from the PyTorch
module; it brings about 2 GB (jax, transformers), so it lives in its own virtual environment
(``python -m models.environments litert``) and runs here as a subprocess of ``models/litert_convert.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parent.parent
LITERT_ENVIRONMENT = REPOSITORY / ".venv-litert"


class ConversionUnavailableError(RuntimeError):
    """A converter's environment is missing; the message says how to make it."""


def export_openvino(onnx_path: Path, xml_path: Path) -> list[Path]:
    """Convert an ``.onnx`` to OpenVINO IR (``.xml`` and ``.bin``), weights kept at their precision.

    ``compress_to_fp16=False``: the default would halve the fp32 constants (the anomaly projector) to fp16.
    """
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return [xml_path, xml_path.with_suffix(".bin")]


def litert_python() -> Path:
    """The Python of the LiteRT converter's environment; raises if it has not been made."""
    python = LITERT_ENVIRONMENT / "bin" / "python"
    if not python.is_file():
        raise ConversionUnavailableError(
            f"{python} is missing: make the converter's environment with 'python -m models.environments litert'"
        )
    return python


def export_litert(
    module: nn.Module,
    calibration: npt.NDArray[np.float32],
    tflite_path: Path,
    *,
    quantized_prefix: str,
    fp32_prefixes: Sequence[str] = (),
    reduce_range: bool = False,
) -> Path:
    """Convert ``module`` to a ``.tflite`` with int8 static quantization (per-channel weights).

    Nodes under the submodule ``quantized_prefix`` (for example ``classifier``) are quantized, except those
    under any of ``fp32_prefixes``; the rest stays fp32. Calibration runs the windows one at a time, since
    the converted graph has a batch of one. ``reduce_range`` gives 7-bit weights, as
    :func:`models.export.quantize_int8` does with it.
    """
    python = litert_python()
    with tempfile.TemporaryDirectory(prefix="edgefleet-litert-") as scratch:
        module_path, windows_path = Path(scratch) / "module.pt", Path(scratch) / "calibration.npy"
        # The whole module is pickled: the converter's environment imports the same models package.
        torch.save(module.eval(), module_path)
        np.save(windows_path, calibration.astype(np.float32))
        command = [
            str(python),
            # As a module, not a script path: a script's folder goes first on sys.path, and the names of
            # this package's modules would shadow top-level modules that litert-torch's dependencies import.
            "-m",
            "models.litert_convert",
            "--module",
            str(module_path),
            "--calibration",
            str(windows_path),
            "--out",
            str(tflite_path.resolve()),  # the converter runs in the repository
            "--quantize",
            quantized_prefix,
            *(argument for prefix in fp32_prefixes for argument in ("--fp32", prefix)),
            *(["--reduce-range"] if reduce_range else []),
        ]
        environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPOSITORY, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise RuntimeError(f"LiteRT conversion of {tflite_path.name} failed (exit {result.returncode})")
    return tflite_path
