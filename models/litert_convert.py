"""Convert a pickled PyTorch window model to an int8 ``.tflite``; runs inside ``.venv-litert`` (litert-torch).

Called by :func:`models.conversion.export_litert`, not by hand. Static post-training quantization with
litert-torch's PT2E quantizer: symmetric int8, per-channel weights, calibrated on the windows given.
Only nodes under ``--quantize`` are annotated, minus those under any ``--fp32``: the quantizer's own
module filters never match conv or linear nodes in torch 2.13 (their weight nodes carry no module
stack), so the selection is a node filter of our own. ``--reduce-range`` quantizes weights to 7 bits
(-64…64, scale ``max|w| / 64``), exactly as ONNX Runtime's ``reduce_range`` does for the ``.onnx``, so
that both files hold the same integer weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _module_paths(node: Any) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [str(path) for path, _ in stack.values()]


def _within(paths: list[str], prefix: str) -> bool:
    return any(path == prefix or path.startswith(prefix + ".") for path in paths)


def convert(
    module_path: Path, calibration_path: Path, out: Path, quantize: str, fp32: list[str], *, reduce_range: bool = False
) -> None:
    """Quantize and convert; writes ``out``."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    torch.manual_seed(0)
    module = torch.load(module_path, weights_only=False).eval()
    windows = np.load(calibration_path).astype(np.float32)
    example = (torch.from_numpy(windows[:1]),)
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    # Activations calibrated by min and max, as ONNX Runtime's MinMax calibration does for the .onnx (the
    # default histogram observer clips outliers differently): the two int8 models then agree closely.
    activations = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12),
    )
    config = dataclasses.replace(config, input_activation=activations, output_activation=activations)
    if reduce_range:
        config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-64, quant_max=64))

    def selected(node: Any) -> bool:
        paths = _module_paths(node)
        if not paths:  # weights and biases: they follow the op that uses them
            return True
        return _within(paths, quantize) and not any(_within(paths, prefix) for prefix in fp32)

    class SelectiveQuantizer(PT2EQuantizer):  # type: ignore[misc]  # litert-torch ships no type hints
        def _annotate_for_static_quantization_config(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            self._annotate_all_static_patterns(model, self.global_config, selected)
            return model

    quantizer = SelectiveQuantizer().set_global(config)
    graph = torch.export.export(module, example).module()
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for index in range(len(windows)):
            graph(torch.from_numpy(windows[index : index + 1]))
    graph = convert_pt2e(graph, fold_quantize=False)
    # QuantConfig reads only the global config's mode (static); the annotation above already happened.
    with contextlib.redirect_stdout(io.StringIO()):
        converted = litert_torch.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        converted.export(str(out))


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quantize", required=True, help="submodule whose nodes are quantized")
    parser.add_argument("--fp32", action="append", default=[], help="submodule kept fp32 (repeatable)")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights, as ONNX Runtime's reduce_range")
    arguments = parser.parse_args()
    convert(
        arguments.module,
        arguments.calibration,
        arguments.out,
        arguments.quantize,
        arguments.fp32,
        reduce_range=arguments.reduce_range,
    )


if __name__ == "__main__":
    main()
