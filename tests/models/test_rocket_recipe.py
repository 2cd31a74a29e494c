"""The rocket parts of a task's build (``models/rocket_recipe.py``): temperature, blend, distilled head, fitting."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

torch = pytest.importorskip("torch")
recipe = pytest.importorskip("models.rocket_recipe")
rocket = pytest.importorskip("models.rocket")

WINDOW = 48


def _three_classes(count: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Noisy sines of 2, 5 and 11 cycles per window, random phases."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    time = np.arange(WINDOW) / WINDOW
    cycles = np.array([2.0, 5.0, 11.0])[labels][:, np.newaxis]
    phases = rng.uniform(0, 2 * np.pi, size=(count, 1))
    windows = np.sin(2 * np.pi * cycles * time + phases) + 0.4 * rng.standard_normal((count, WINDOW))
    return windows.astype(np.float32), labels.astype(np.int64)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4000, 3)) * 3.0
    probabilities = recipe.softmax(logits / 0.5)
    labels = np.array([rng.choice(3, p=row) for row in probabilities], dtype=np.int64)
    assert recipe.fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.1)


def test_choose_blend_prefers_the_member_that_is_right() -> None:
    labels = np.arange(60) % 3
    right = np.full((60, 3), 0.05)
    right[np.arange(60), labels] = 0.9
    wrong = np.roll(right, 1, axis=1)
    assert recipe.choose_blend(right, wrong, labels) == 1.0
    assert recipe.choose_blend(wrong, right, labels) == 0.0
    assert recipe.blend(right, wrong, 0.25) == pytest.approx(0.25 * right + 0.75 * wrong)


def test_distilled_head_without_teacher_is_the_ridge_classifier() -> None:
    from sklearn.linear_model import RidgeClassifierCV

    windows, labels = _three_classes(60, seed=1)
    front = rocket.RocketFrontEnd(rocket.fit_features(windows, 336, seed=0)).eval()
    features = rocket.transform(front, windows)
    head = recipe.fit_distilled_head(features, labels, np.full((60, 3), 1 / 3), share=0.0)
    reference = RidgeClassifierCV(alphas=list(rocket.RIDGE_ALPHAS)).fit(features.astype(np.float64), labels)
    assert head.alpha == reference.alpha_
    assert head.weight == pytest.approx(reference.coef_.astype(np.float32), abs=1e-4)
    # A teacher's probabilities move the targets, hence the weights.
    teacher = np.eye(3)[(labels + 1) % 3]
    assert not np.allclose(recipe.fit_distilled_head(features, labels, teacher, share=0.5).weight, head.weight)


def test_with_temperature_scales_the_scores_and_keeps_the_model() -> None:
    windows, labels = _three_classes(30, seed=2)
    model = rocket.fit_rocket(windows, labels, 3, n_features=168, seed=0)
    scaled = recipe.with_temperature(model, 0.25)
    assert recipe.rocket_scores(scaled, windows) == pytest.approx(recipe.rocket_scores(model, windows) * 4, rel=1e-4)
    assert model.head.weight.data.abs().max() < scaled.head.weight.data.abs().max()


def test_blended_cloud_returns_the_log_of_the_blend() -> None:
    windows, labels = _three_classes(30, seed=3)
    model = rocket.fit_rocket(windows, labels, 3, n_features=168, seed=0)
    cnn = torch.nn.Sequential(torch.nn.Linear(WINDOW, 3))
    cloud = recipe.BlendedCloud(cnn, model, 0.3).eval()
    batch = torch.from_numpy(windows)
    with torch.no_grad():
        expected = 0.3 * cnn(batch).softmax(-1) + 0.7 * model.logits(batch).softmax(-1)
        assert cloud(batch).exp().numpy() == pytest.approx(expected.numpy(), abs=1e-6)
        # A weight of 1 leaves the rocket out of the graph.
        assert recipe.BlendedCloud(cnn, model, 1.0).rocket is None


def test_fit_rocket_models_fits_calibrated_pruned_edge_and_blend() -> None:
    torch.manual_seed(0)
    windows, labels = _three_classes(60, seed=4)
    folds = [np.arange(start, start + 20) for start in (0, 20, 40)]  # every class in every fold
    members = [torch.nn.Sequential(torch.nn.Linear(WINDOW, 3)).eval() for _ in folds]
    plan = recipe.RocketPlan(cloud_features=336, feature_counts=(168, 336), keeps=(0.5,), selection_folds=3)
    fitted = recipe.fit_rocket_models(windows, labels, 3, folds, members, plan, seed=0)
    # Untrained linear members are noise: the blend leans on the rocket.
    assert fitted.cnn_weight < 0.5
    assert len(fitted.edge.pruned.front.features) < len(fitted.edge.unpruned.front.features)
    assert len(fitted.fold_edges) == 3
    assert np.mean(fitted.held_out["edge_fp32"] == labels) > 0.8
    scores = recipe.rocket_scores(fitted.calibrated_edge, windows)
    raw = recipe.rocket_scores(fitted.edge.pruned, windows)
    assert scores == pytest.approx(raw / fitted.edge_temperature, rel=1e-4, abs=1e-4)
    assert set(fitted.notes()) == {
        "cloud_temperature",
        "cnn_weight",
        "blend_outcome",
        "edge_temperature",
        "edge_features",
        "selection",
    }
