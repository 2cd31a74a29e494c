"""Structured pruning really removes channels; the card's preprocessing steps behave as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.signals import apply_preprocessing, resample


def test_resample_keeps_the_endpoints_and_interpolates_linearly() -> None:
    series = np.array([[0.0, 1.0, 2.0, 3.0]])
    assert resample(series, 7).tolist() == [[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]]
    assert resample(np.zeros((2, 3, 10)), 4).shape == (2, 3, 4)


def test_card_steps_apply_in_order_on_the_last_axis() -> None:
    windows = np.arange(24, dtype=np.float64).reshape(2, 2, 6)
    out = apply_preprocessing(windows, [{"op": "resample", "length": 11}, {"op": "znorm", "epsilon": 1e-8}])
    assert out.shape == (2, 2, 11)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=-1), 1.0, atol=1e-5)


def test_pruning_removes_channels_and_keeps_the_interface() -> None:
    torch = pytest.importorskip("torch")
    from models.networks import SeriesClassifier, multiply_accumulates, parameter_count
    from models.pruning import prune_channels

    torch.manual_seed(0)
    model = SeriesClassifier(3, (16, 32), (5, 3), (2, 1), 4, input_mean=[0.0, 1.0, 2.0], input_std=[1.0, 2.0, 3.0])
    model.eval()
    example = torch.randn(5, 3, 40)
    pruned = prune_channels(model, 0.5)
    assert pruned.widths == (8, 16)
    assert pruned(example).shape == (5, 4)
    assert parameter_count(pruned) < parameter_count(model) / 2
    assert multiply_accumulates(pruned, example[:1]) < multiply_accumulates(model, example[:1]) / 2

    untouched = prune_channels(model, 1.0)
    with torch.no_grad():
        np.testing.assert_allclose(untouched(example).numpy(), model(example).numpy(), atol=1e-5)


def test_pruning_keeps_the_most_important_channels() -> None:
    torch = pytest.importorskip("torch")
    from models.networks import SeriesClassifier
    from models.pruning import prune_channels

    model = SeriesClassifier(1, (4,), (3,), (1,), 2).eval()
    with torch.no_grad():
        norm = model.features[1]
        norm.weight.copy_(torch.tensor([0.01, 1.0, 0.02, 2.0]))
        model.features[0].weight.fill_(1.0)
    pruned = prune_channels(model, 0.5, minimum=1)
    np.testing.assert_allclose(pruned.features[1].weight.detach().numpy(), [1.0, 2.0])


def test_a_reading_scores_the_highest_window_that_contains_it() -> None:
    from models.series_scoring import reading_scores, sliding_windows

    assert sliding_windows(np.arange(6.0), 3).tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    # Four windows of three readings over six readings; window 1 covers readings 1-3.
    assert reading_scores([0.0, 5.0, 1.0, 0.0], 3).tolist() == [0.0, 5.0, 5.0, 5.0, 1.0, 0.0]


def test_detection_figures_reward_scores_that_rank_anomalies_first() -> None:
    from models.series_scoring import detection_figures

    labels = np.array([0, 0, 1, 1, 0, 0])
    perfect = detection_figures(np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.1]), labels)
    assert (perfect.roc_auc, perfect.best_f1) == (1.0, 1.0)
    assert detection_figures(np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.6]), labels).roc_auc == 0.0


def test_autoencoder_pruning_removes_hidden_units_but_not_the_bottleneck() -> None:
    torch = pytest.importorskip("torch")
    from models.autoencoder import DenseAutoencoder, prune_units
    from models.networks import parameter_count

    torch.manual_seed(0)
    model = DenseAutoencoder(32, (64, 32), 8).eval()
    pruned = prune_units(model, 0.5)
    assert pruned.encoder_widths == (32, 16)
    assert pruned.decoder_widths == (16, 32)
    assert pruned.bottleneck == 8
    assert parameter_count(pruned) < parameter_count(model) / 2
    windows = torch.randn(3, 32)
    assert pruned(windows).shape == (3, 32)
    with torch.no_grad():
        np.testing.assert_allclose(prune_units(model, 1.0)(windows).numpy(), model(windows).numpy(), atol=1e-5)


def test_batchnorm_folds_into_the_dense_layers_without_changing_the_reconstruction() -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    from models.autoencoder import AveragedAutoencoder, DenseAutoencoder, fold_batchnorm, prune_units

    torch.manual_seed(0)
    members = [prune_units(DenseAutoencoder(32, (64, 32), 8), 0.5) for _ in range(2)]
    for member in members:  # running statistics away from BatchNorm's initial identity
        for norm in member.modules():
            if isinstance(norm, nn.BatchNorm1d):
                norm.running_mean.uniform_(-1.0, 1.0)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.data.uniform_(0.5, 1.5)
                norm.bias.data.uniform_(-0.5, 0.5)
    model = AveragedAutoencoder(members).eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(module, nn.BatchNorm1d) for module in folded.modules())
    assert any(isinstance(module, nn.BatchNorm1d) for module in model.modules())  # the original is untouched
    # Module names are kept: the int8 export keeps layers.0 fp32 by name.
    assert {name for name, _ in folded.named_modules()} == {name for name, _ in model.named_modules()}
    windows = torch.randn(5, 32)
    with torch.no_grad():
        np.testing.assert_allclose(folded(windows).numpy(), model(windows).numpy(), rtol=1e-5, atol=1e-5)


def test_the_anomaly_graph_scores_in_five_fp32_nodes_as_the_torch_score_does(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")

    from models.autoencoder import AnomalyModel, DenseAutoencoder
    from models.export import quantize_int8
    from models.runtimes import OnnxRuntimeRunner
    from models.series_anomaly import FP32_PREFIXES, SCORE_PREFIX, _export

    torch.manual_seed(0)
    model = DenseAutoencoder(32, (16,), 4).eval()
    windows = torch.randn(64, 32)
    path = _export(model, 2.5, tmp_path / "model.onnx", 32, windows[:8].numpy())
    with torch.no_grad():
        probabilities, score = AnomalyModel(model, 2.5)(windows)
    exported = OnnxRuntimeRunner(path)(windows.numpy())
    np.testing.assert_allclose(exported.anomaly_score, score.numpy(), rtol=1e-5)
    np.testing.assert_allclose(exported.probabilities, probabilities.numpy(), rtol=1e-5, atol=1e-7)
    nodes = onnx.load(str(path)).graph.node
    assert [node.op_type for node in nodes if node.name.startswith(SCORE_PREFIX)] == [
        "Sub",
        "ReduceSumSquare",
        "Gemm",
        "LpNormalization",
        "MatMul",
    ]
    quantized = tmp_path / "int8.onnx"
    quantize_int8(path, quantized, windows.numpy(), exclude_prefixes=FP32_PREFIXES, reduce_range=True)
    graph = onnx.load(str(quantized)).graph
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("weight_quantized")]
    assert len(weights) == 3  # of the four layers, the first stays fp32
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == 64  # 7 bits: -64…64
    score_inputs = {i for node in graph.node if node.name.startswith(SCORE_PREFIX) for i in node.input}
    assert not any(name.endswith("_DequantizeLinear_Output") and "score" in name for name in score_inputs)
    int8 = OnnxRuntimeRunner(quantized)(windows.numpy())
    assert np.corrcoef(int8.anomaly_score, score.numpy())[0, 1] > 0.99


@pytest.mark.parametrize("normalizes", [False, True])
def test_a_first_convolution_left_fp32_reads_int8_behind_a_quantized_normalization(
    normalizes: bool, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from models.classification import FIRST_CONVOLUTION, FP32_OP_TYPES, FP32_PREFIXES
    from models.export import export_onnx, quantize_int8, reads_quantized
    from models.networks import ProbabilityModel, SeriesClassifier

    torch.manual_seed(0)
    statistics = {"input_mean": [0.5, -0.5], "input_std": [2.0, 3.0]} if normalizes else {}
    model = SeriesClassifier(2, (8, 8), (5, 3), (2, 1), 3, **statistics).eval()
    fp32 = export_onnx(
        ProbabilityModel(model), tmp_path / "fp32.onnx", window_size=32, output_names=("probabilities",), channels=2
    )
    windows = np.random.default_rng(0).standard_normal((16, 2, 32)).astype(np.float32)
    int8 = tmp_path / "int8.onnx"
    kept = quantize_int8(fp32, int8, windows, exclude_prefixes=FP32_PREFIXES, exclude_op_types=FP32_OP_TYPES)
    assert FIRST_CONVOLUTION in kept
    assert reads_quantized(int8, FIRST_CONVOLUTION) is normalizes
    assert reads_quantized(fp32, FIRST_CONVOLUTION) is False
    with pytest.raises(ValueError, match="has 0 nodes named"):
        reads_quantized(int8, "/no/such/node")
