"""The MiniRocket-style edge model (``models/rocket.py``): kernels, PPV features, ONNX export, pruning, fitting.

Fast tests use small synthetic series; the one on real data (ItalyPowerDemand) is marked ``train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

torch = pytest.importorskip("torch")
rocket = pytest.importorskip("models.rocket")

WINDOW = 64


def _two_classes(count: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Noisy sines: class 0 slow (2 cycles per window), class 1 fast (9 cycles), random phases."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    time = np.arange(WINDOW) / WINDOW
    cycles = np.where(labels == 0, 2.0, 9.0)[:, np.newaxis]
    phases = rng.uniform(0, 2 * np.pi, size=(count, 1))
    windows = np.sin(2 * np.pi * cycles * time + phases) + 0.3 * rng.standard_normal((count, WINDOW))
    return windows.astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def fitted() -> tuple[Any, npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    torch.set_num_threads(1)
    windows, labels = _two_classes(40, seed=1)
    return rocket.fit_rocket(windows, labels, 2, n_features=420, seed=0), windows, labels


def _session(path: Path) -> Any:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_84_kernels_weigh_minus_one_and_two_and_sum_to_zero() -> None:
    weights = rocket.kernel_weights()
    assert weights.shape == (84, 9)
    assert set(np.unique(weights).tolist()) == {-1.0, 2.0}
    assert ((weights == 2.0).sum(axis=1) == 3).all()
    np.testing.assert_array_equal(weights.sum(axis=1), 0.0)
    assert len({tuple(row) for row in weights.tolist()}) == 84


def test_dilations_and_quantiles_follow_minirocket() -> None:
    dilations, per_dilation = rocket.fit_dilations(512, 10_000)
    assert dilations[0] == 1
    assert dilations[-1] <= (512 - 1) // 8
    assert int(per_dilation.sum()) * 84 == 9_996
    short, _ = rocket.fit_dilations(24, 10_000)
    assert short.tolist() == [1, 2]
    np.testing.assert_allclose(rocket.quantiles(3), [0.6180340, 0.2360680, 0.8541020], atol=1e-6)
    with pytest.raises(ValueError, match="shorter than the kernels"):
        rocket.fit_dilations(8, 1_000)


def test_ppv_features_lie_in_0_1_and_match_a_direct_computation(fitted: tuple[Any, Any, Any]) -> None:
    model, windows, _ = fitted
    features = rocket.transform(model.front, windows)
    assert features.shape == (len(windows), len(model.front.features))
    assert features.min() >= 0.0
    assert features.max() <= 1.0
    spec = model.front.features
    weights = rocket.kernel_weights()
    for index in (0, len(spec) // 3, len(spec) - 1):
        dilation, kernel, bias = int(spec.dilations[index]), int(spec.kernels[index]), float(spec.biases[index])
        padding = 4 * dilation
        padded = np.pad(windows[0].astype(np.float64), padding)
        output = np.array(
            [sum(weights[kernel, tap] * padded[t + tap * dilation] for tap in range(9)) for t in range(WINDOW)]
        )
        if spec.valid[index]:
            output = output[padding : WINDOW - padding]
        assert features[0, index] == pytest.approx(float(np.mean(output > bias)), abs=1e-6)


def test_onnx_export_matches_torch_and_int8_runs(fitted: tuple[Any, Any, Any], tmp_path: Path) -> None:
    model, windows, _ = fitted
    fp32, int8 = rocket.export_rocket(model, tmp_path, "tiny", windows)
    with torch.no_grad():
        expected = model(torch.from_numpy(windows)).numpy()
    got = _session(fp32).run(None, {"window": windows})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    quantized = _session(int8).run(None, {"window": windows})[0]
    assert quantized.shape == expected.shape
    assert np.mean(quantized.argmax(axis=1) == expected.argmax(axis=1)) >= 0.95


def _front_end_graph(front: Any, path: Path, example: npt.NDArray[np.float32]) -> Path:
    from models.export import export_onnx

    return export_onnx(front, path, window_size=example.shape[1], output_names=("features",))


def _flat_stretches(count: int, seed: int) -> npt.NDArray[np.float32]:
    """Noisy sines with a constant stretch in each window, over which every kernel sums to exactly zero.

    The constant (0.75) has a short mantissa, so that the partial sums are exact in any order too.
    """
    windows, _ = _two_classes(count, seed)
    windows[:, 20:44] = 0.75
    return windows


def test_the_graph_is_a_convolution_per_feature_group_and_computes_what_training_saw(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    windows = _flat_stretches(24, seed=4)
    front = rocket.RocketFrontEnd(rocket.fit_features(windows, 840, seed=0)).eval()
    path = _front_end_graph(front, tmp_path / "front.onnx", windows)
    op_types = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert op_types.count("Conv") == len(front.groups)
    assert not {"Gather", "Slice", "Greater", "Cast"} & set(op_types)
    device = _session(path).run(None, {"window": windows})[0]
    # Training's features (tap by tap) are the device's, to the bit.
    np.testing.assert_array_equal(rocket.transform(front, windows), device)
    with torch.no_grad():
        graph_form = front(torch.from_numpy(windows)).numpy()
    assert np.abs(graph_form - device).max() <= 1 / windows.shape[1]


def test_a_bias_near_zero_survives_the_convolution(tmp_path: Path) -> None:
    windows = _flat_stretches(4, seed=5)
    spec = rocket.fit_features(windows, 84, seed=0)
    # Biases far below the windows' rounding (1e-12), and below the graph's scale (1e-30, moved out to 2^-64).
    tiny = np.array([1e-12, -1e-12, 1e-30, -1e-30], dtype=np.float32)[np.arange(len(spec)) % 4]
    spec = rocket.RocketFeatures(spec.window, spec.dilations, spec.kernels, tiny, spec.valid)
    front = rocket.RocketFrontEnd(spec).eval()
    device = _session(_front_end_graph(front, tmp_path / "front.onnx", windows)).run(None, {"window": windows})[0]
    trained = rocket.transform(front, windows[:1])
    weights = rocket.kernel_weights()
    for index in range(len(spec)):
        dilation, kernel = int(spec.dilations[index]), int(spec.kernels[index])
        padding = 4 * dilation
        padded = np.pad(windows[0].astype(np.float64), padding)
        taps = weights[kernel].astype(np.float64)
        output = np.array([taps @ padded[t : t + 9 * dilation : dilation] for t in range(WINDOW)])
        if spec.valid[index]:
            output = output[padding : WINDOW - padding]
        # Exact zeros (the flat stretch) lie above the negative biases and not above the positive ones.
        expected = float(np.mean(output > float(tiny[index])))
        assert device[0, index] == pytest.approx(expected, abs=1e-6), index
        assert trained[0, index] == device[0, index]


def test_a_tiny_fit_separates_two_classes(fitted: tuple[Any, Any, Any]) -> None:
    model, _, _ = fitted
    test, test_labels = _two_classes(40, seed=2)
    assert np.mean(rocket.predict(model, test) == test_labels) >= 0.95
    with torch.no_grad():
        probabilities = model(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_pruning_removes_features_and_computation_and_stays_runnable(
    fitted: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    model, windows, labels = fitted
    pruned = rocket.prune_rocket(model, windows, labels, 0.1)
    assert len(pruned.front.features) == round(0.1 * len(model.front.features))
    assert pruned.head.in_features == len(pruned.front.features)
    assert sum(group.conv.out_channels for group in pruned.front.feature_groups) == len(pruned.front.features)
    assert pruned.front.multiply_accumulates() < model.front.multiply_accumulates() / 2
    kept = set(zip(pruned.front.features.kernels.tolist(), pruned.front.features.biases.tolist(), strict=True))
    original = set(zip(model.front.features.kernels.tolist(), model.front.features.biases.tolist(), strict=True))
    assert kept <= original
    test, test_labels = _two_classes(40, seed=3)
    assert np.mean(rocket.predict(pruned, test) == test_labels) >= 0.9
    fp32, _ = rocket.export_rocket(pruned, tmp_path, "pruned", windows)
    with torch.no_grad():
        expected = pruned(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(_session(fp32).run(None, {"window": test})[0], expected, atol=1e-5)


@pytest.mark.train
def test_italy_power_matches_minirocket_level_accuracy() -> None:
    pytest.importorskip("sktime")
    from models.datasets import load_italy_power
    from models.signals import apply_preprocessing

    torch.set_num_threads(1)
    data = load_italy_power()
    train = apply_preprocessing(data.train_windows, [{"op": "znorm"}])
    test = apply_preprocessing(data.test_windows, [{"op": "znorm"}])
    model = rocket.fit_rocket(train, data.train_labels, 2, n_features=1_000)
    assert np.mean(rocket.predict(model, test) == data.test_labels) >= 0.95


def test_the_pruned_configuration_is_the_smallest_within_the_tolerance_of_the_best_one() -> None:
    # Cross-validated accuracies shaped like PLAID's: pruning 3,000 features beats every full model.
    accuracy = {
        (1_000, 1.0): 0.890, (1_000, 0.5): 0.885, (1_000, 0.25): 0.872,
        (3_000, 1.0): 0.879, (3_000, 0.5): 0.898, (3_000, 0.25): 0.896,
        (10_000, 1.0): 0.892, (10_000, 0.5): 0.890, (10_000, 0.25): 0.883,
    }  # fmt: skip
    choice = rocket.choose_configuration(accuracy, (1_000, 3_000, 10_000), (0.5, 0.25), tolerance=0.01)
    assert (choice.n_features, choice.pruned_features, choice.keep) == (10_000, 3_000, 0.25)
    assert choice.pruned_within_tolerance
    # Within 0.01 of the best full model (0.892) alone, 500 features at 0.885 would have been chosen; a
    # looser tolerance of the best configuration chooses them too.
    loose = rocket.choose_configuration(accuracy, (1_000, 3_000, 10_000), (0.5, 0.25), tolerance=0.02)
    assert (loose.pruned_features, loose.keep) == (1_000, 0.5)
    # No pruned model near the best full one: the most accurate pruned model.
    weak = {**accuracy, (10_000, 1.0): 0.95}
    fallback = rocket.choose_configuration(weak, (1_000, 3_000, 10_000), (0.5, 0.25), tolerance=0.01)
    assert (fallback.pruned_features, fallback.keep, fallback.pruned_within_tolerance) == (3_000, 0.5, False)
