"""Task ``italy_power``: is a day's hourly electricity-demand profile of Italy a winter or a summer day?

Builds two models from sktime's bundled ItalyPowerDemand, both taking one z-normalized window of 24 hourly
readings and returning class probabilities and an anomaly score:

- cloud (fp32): an ensemble of 1D CNNs, one per fold of a stratified k-fold split of the training set,
  blended with a full MiniRocket-style model (:mod:`models.rocket_recipe`);
- edge (int8): a MiniRocket-style model distilled from the cloud model, pruned and calibrated, its head
  statically quantized with ONNX Runtime.

The official test split is touched only to report final figures. Validation figures are out-of-fold:
for each fold, the recipe (train, fit, distil, prune, quantize) runs on the other folds and is scored on
the held-out one. Run ``python -m models.italy_power [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from models.anomaly import SubspaceScorer, fit_subspace_scorer
from models.cards import (
    InputCard,
    PeerCard,
    TaskCard,
    machine_description,
    software_versions,
    write_card,
)
from models.classification import (
    ROCKET_ATOL,
    ROCKET_FP32_OP_TYPES,
    ROCKET_LITERT_QUANTIZED,
    ROCKET_REDUCE_RANGE,
    rocket_held_out_int8,
)
from models.datasets import WindowDataset, load_italy_power
from models.evaluation import FaultResponse, OnnxWindowModel, accuracy, fault_responses, nearest_neighbour_predictions
from models.export import export_onnx, quantize_int8, source_commit
from models.kernels import kernel_record, pin_kernels
from models.networks import (
    ConvClassifier,
    SubspaceAnomalyScore,
    WindowModel,
    multiply_accumulates,
    parameter_count,
)
from models.packaging import (
    EdgeExports,
    agreement,
    available_backends,
    backend_predictions,
    export_edge_backends,
)
from models.peers import PeerResult, run_peers
from models.pipeline import (
    ManifestCommon,
    backends_goal,
    build_steps,
    bullets,
    classifier_peer_cards,
    latency_metrics,
    measure_latencies,
    ratio_goals,
    rebuild_command,
    rounded,
    skipped_text,
    variant_cards,
    variant_names,
    write_manifests,
)
from models.rocket import RocketLogits
from models.rocket_recipe import RocketPlan, fit_rocket_models
from models.training import (
    Advance,
    Recipe,
    make_deterministic,
    predict_probabilities,
    stratified_folds,
    train_classifier,
)
from protocol.manifest import (
    InputSpec,
    OutputSpec,
    PreprocessStep,
    ZNormalize,
)
from protocol.messages import SensorKind
from protocol.preprocessing import preprocess

TASK = "italy_power"
VERSION = "1.0.0"
NAMES = variant_names(TASK)
CLOUD_NAME, EDGE_NAME = NAMES["cloud_fp32"], NAMES["edge_int8"]
PREPROCESSING: list[PreprocessStep] = [ZNormalize()]
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "quantized"
REPOSITORY = Path(__file__).resolve().parent.parent
REBUILD = rebuild_command(TASK)

# Kept fp32 in the int8 graph. The anomaly branch: its intermediate values for faulty windows lie far
# outside the range calibrated on normal windows, so int8 would clip exactly the scores that matter
# (it is one 24×24 MatMul, cheap in fp32). The rocket front end and Softmax: see ROCKET_FP32_OP_TYPES.
FP32_PREFIXES = ("/anomaly/",)
FP32_OP_TYPES = ROCKET_FP32_OP_TYPES
# For the .tflite: only the classifier's head is quantized (the front end, the anomaly branch and softmax
# stay fp32, as above), so the input, shared with the fp32 anomaly branch, stays fp32 too.
LITERT_QUANTIZED = ROCKET_LITERT_QUANTIZED


@dataclass(frozen=True)
class BuildPlan:
    """Everything that shapes a build besides the seed; the same plan and seed give the same bytes."""

    folds: int
    cloud_recipe: Recipe
    rocket: RocketPlan
    cloud_widths: tuple[int, ...] = (32, 64, 32)
    cloud_kernels: tuple[int, ...] = (7, 5, 3)
    anomaly_components: int = 5
    """Chosen by 5-fold cross-validation on the training windows (more components memorize the 67 windows)."""

    def with_epochs(self, epochs: int) -> BuildPlan:
        """The same plan with the cloud members trained for ``epochs``."""
        return dataclasses.replace(self, cloud_recipe=dataclasses.replace(self.cloud_recipe, epochs=epochs))


FULL_PLAN = BuildPlan(folds=5, cloud_recipe=Recipe(epochs=300), rocket=RocketPlan())
QUICK_PLAN = BuildPlan(folds=3, cloud_recipe=Recipe(epochs=80), rocket=RocketPlan.quick())


@dataclass(frozen=True)
class VariantResult:
    """Figures of one model variant, for manifests, the model card and the CLI table."""

    label: str
    parameters: int
    val_accuracy: float
    test_accuracy: float
    bytes: int | None = None


def _cloud_member(plan: BuildPlan, classes: int) -> nn.Module:
    return ConvClassifier(plan.cloud_widths, plan.cloud_kernels, classes)


def _export_edge(
    student: nn.Module, scorer: SubspaceScorer, calibration: npt.NDArray[np.float32], fp32_path: Path, int8_path: Path
) -> list[str]:
    """Export the edge classifier with its anomaly head, then quantize it; returns the nodes kept fp32."""
    export_onnx(WindowModel(student, SubspaceAnomalyScore(scorer)), fp32_path, window_size=calibration.shape[1])
    return quantize_int8(
        fp32_path,
        int8_path,
        calibration,
        exclude_prefixes=FP32_PREFIXES,
        exclude_op_types=FP32_OP_TYPES,
        reduce_range=ROCKET_REDUCE_RANGE,
    )


@dataclass
class _CrossValidation:
    """The cloud members (member *k* trained without fold *k*), the folds, and the 1-NN's out-of-fold predictions."""

    folds: list[npt.NDArray[np.int64]]
    members: list[nn.Module] = dataclasses.field(default_factory=list)
    held_out_1nn: npt.NDArray[np.int64] = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))


def _cross_validate(
    plan: BuildPlan,
    data: WindowDataset,
    train: npt.NDArray[np.float32],
    *,
    seed: int,
    describe: Callable[[str], None],
    advance: Advance,
) -> _CrossValidation:
    """Train one cloud member per fold, without that fold; they are the shipped ensemble's members.

    Their out-of-fold predictions choose the cloud blend and validate it
    (:func:`models.rocket_recipe.fit_rocket_models`).
    """
    labels = data.train_labels
    result = _CrossValidation(folds=stratified_folds(labels, plan.folds, np.random.default_rng(seed)))
    result.held_out_1nn = np.empty(len(train), np.int64)
    for index, fold in enumerate(result.folds):
        fit = np.setdiff1d(np.arange(len(train)), fold)
        describe(f"cloud member {index + 1}/{plan.folds}")
        member = train_classifier(
            _cloud_member(plan, len(data.class_names)),
            train[fit],
            labels[fit],
            plan.cloud_recipe,
            seed=seed * 1000 + index,
            advance=advance,
        )
        result.members.append(member)
        result.held_out_1nn[fold] = nearest_neighbour_predictions(train[fit], labels[fit], train[fold])
    return result


def build(output_dir: Path, *, seed: int = 0, epochs: int | None = None, quick: bool = False) -> dict[str, Any]:
    """Train, export, quantize and evaluate both models; write artifacts, manifests and the model card.

    ``quick`` trains fewer folds for fewer epochs (for tests); ``epochs`` overrides the plan's epochs.
    Returns a JSON-able summary: artifact paths, per-variant figures, anomaly responses, wall time.
    """
    started = time.perf_counter()
    plan = QUICK_PLAN if quick else FULL_PLAN
    if epochs is not None:
        plan = plan.with_epochs(epochs)
    output_dir.mkdir(parents=True, exist_ok=True)
    make_deterministic(seed)

    data = load_italy_power()
    train = preprocess(data.train_windows, PREPROCESSING)
    test = preprocess(data.test_windows, PREPROCESSING)
    labels = data.train_labels
    cloud_path = output_dir / f"{CLOUD_NAME}.onnx"
    edge_path = output_dir / f"{EDGE_NAME}.onnx"
    edge_fp32_path = output_dir / f"{NAMES['edge_fp32']}.onnx"
    total_steps = plan.folds * (plan.cloud_recipe.epochs + 2) + 3

    with build_steps(TASK, total_steps) as run:
        scratch, describe, advance = run.scratch, run.describe, run.advance
        validation = _cross_validate(plan, data, train, seed=seed, describe=describe, advance=advance)
        fitted = fit_rocket_models(
            train,
            labels,
            len(data.class_names),
            validation.folds,
            validation.members,
            plan.rocket,
            seed=seed,
            describe=describe,
            advance=advance,
        )
        held_out = fitted.held_out | {
            "edge_int8": rocket_held_out_int8(fitted.fold_edges, validation.folds, train, scratch),
            "1nn": validation.held_out_1nn,
        }
        cloud_classifier = fitted.cloud
        student = RocketLogits(fitted.calibrated_edge).eval()
        scorer = fit_subspace_scorer(train, components=plan.anomaly_components)

        describe("export and quantize")
        cloud_model = WindowModel(cloud_classifier, SubspaceAnomalyScore(scorer))
        export_onnx(cloud_model, cloud_path, window_size=data.window_size)
        _check_export(cloud_model, cloud_path, train)
        kept_fp32 = _export_edge(student, scorer, train, edge_fp32_path, edge_path)
        edge_model = WindowModel(student, SubspaceAnomalyScore(scorer))
        _check_export(edge_model, edge_fp32_path, train)
        exports = export_edge_backends(
            output_dir,
            EDGE_NAME,
            edge_model,
            train,
            quantized_prefix=LITERT_QUANTIZED,
            reduce_range=ROCKET_REDUCE_RANGE,
            describe=describe,
        )

        # The first and only use of the test split: figures for the record.
        describe("evaluate on the test split")
        cloud_runtime, edge_runtime = OnnxWindowModel(cloud_path), OnnxWindowModel(edge_path)
        cloud_test, edge_test = cloud_runtime(test), edge_runtime(test)
        edge_fp32_test = OnnxWindowModel(edge_fp32_path)(test)
        edge_fp32_bytes = edge_fp32_path.stat().st_size
        edge_faults = fault_responses(edge_runtime, data.test_windows, PREPROCESSING, seed=seed)
        cloud_faults = fault_responses(cloud_runtime, data.test_windows, PREPROCESSING, seed=seed)
        backends = available_backends(output_dir, EDGE_NAME)
        per_backend = backend_predictions(output_dir, EDGE_NAME, test, backends)
        backend_agreement = agreement(per_backend, strict=not quick)
        describe("latency per window")
        latencies = measure_latencies(output_dir, NAMES, test[0], backends)

    baseline_test = accuracy(nearest_neighbour_predictions(train, labels, test), data.test_labels)
    peers = run_peers(train, labels, test, data.test_labels, seed=seed)
    results = {
        "cloud_fp32": VariantResult(
            {0.0: "cloud fp32 (rocket)", 1.0: "cloud fp32 (CNN ensemble)"}.get(
                fitted.cnn_weight, "cloud fp32 (CNN ensemble and rocket)"
            ),
            parameter_count(cloud_classifier),
            accuracy(held_out["cloud"], labels),
            accuracy(cloud_test.predictions, data.test_labels),
            cloud_path.stat().st_size,
        ),
        "edge_fp32": VariantResult(
            "edge fp32 (distilled, pruned)",
            parameter_count(student),
            accuracy(held_out["edge_fp32"], labels),
            accuracy(edge_fp32_test.predictions, data.test_labels),
            edge_fp32_bytes,
        ),
        "edge_int8": VariantResult(
            "edge int8 (QDQ static)",
            parameter_count(student),
            accuracy(held_out["edge_int8"], labels),
            accuracy(edge_test.predictions, data.test_labels),
            edge_path.stat().st_size,
        ),
        "baseline_1nn": VariantResult(
            "1-NN Euclidean (baseline)", 0, accuracy(held_out["1nn"], labels), baseline_test, None
        ),
    }
    cloud_agreement = float(np.mean(edge_test.predictions == cloud_test.predictions))

    commit = source_commit(REPOSITORY)
    calibration = (
        f"MinMax over the {len(train)} z-normalized training windows (test split unused); "
        "int8: the PPV features and the head (7-bit weights); kept fp32: the front end's convolutions and "
        "comparisons, the "
        f"anomaly-score branch and Softmax ({len(kept_fp32)} nodes)"
    )
    common = {"baseline_1nn_accuracy": baseline_test}
    manifest_paths = write_manifests(
        ManifestCommon(
            task=TASK,
            version=VERSION,
            input=InputSpec(
                name="window",
                shape=[None, data.window_size],
                sensor=SensorKind.POWER,
                unit="kW",
                window_size=data.window_size,
                hop=data.window_size,
                sample_rate_hz=1.0 / 3600.0,
                preprocessing=PREPROCESSING,
            ),
            output=OutputSpec(
                probabilities="probabilities", labels=list(data.class_names), anomaly_score="anomaly_score"
            ),
            data=data.describe(),
            commit=commit,
            calibration=calibration,
            exports=exports,
        ),
        output_dir,
        NAMES,
        parameters={variant: results[variant].parameters for variant in NAMES},
        # The edge fp32 graph's anomaly branch is the int8 graph's (kept fp32 there): same fault responses.
        metrics={
            "cloud_fp32": _metrics(results["cloud_fp32"], common, cloud_faults, latencies["cloud_fp32"]),
            "edge_int8": _metrics(
                results["edge_int8"],
                {
                    **common,
                    "edge_fp32_test_accuracy": results["edge_fp32"].test_accuracy,
                    "cloud_agreement": cloud_agreement,
                },
                edge_faults,
                latencies["edge_int8"],
            ),
            "edge_fp32": _metrics(results["edge_fp32"], common, edge_faults, latencies["edge_fp32"]),
        },
    )
    card_path = output_dir / f"{TASK}.md"
    card_path.write_text(
        _model_card(
            data,
            plan,
            seed,
            results,
            edge_faults,
            cloud_faults,
            cloud_agreement,
            calibration,
            backend_agreement,
            latencies,
            exports,
            peers,
            fitted.notes(),
        ),
        encoding="utf-8",
    )
    backend_accuracy = {
        f"test_accuracy_{backend}": accuracy(predictions, data.test_labels)
        for backend, predictions in per_backend.items()
    }
    task_card = _task_card(
        directory=output_dir,
        data=data,
        plan=plan,
        seed=seed,
        commit=commit,
        results=results,
        modules={"cloud_fp32": cloud_classifier, "edge_fp32": student, "edge_int8": student},
        notes=fitted.notes(),
        exports=exports,
        latencies=latencies,
        backend_accuracy=backend_accuracy,
        backend_agreement=backend_agreement,
        edge_faults=edge_faults,
        calibration=calibration,
        peers=peers,
    )
    task_card_path = write_card(task_card, output_dir)

    return {
        "task": TASK,
        "seed": seed,
        "quick": quick,
        "artifacts": {
            "cloud": str(cloud_path),
            "edge": str(edge_path),
            "manifests": [str(path) for path in manifest_paths],
            "card": str(card_path),
            "task_card": str(task_card_path),
        },
        "variants": {key: dataclasses.asdict(result) for key, result in results.items()},
        "cloud_agreement": cloud_agreement,
        "backend_agreement": backend_agreement,
        "backend_accuracy": backend_accuracy,
        "latency_ms": latencies,
        "skipped": exports.skipped,
        "anomaly": {
            "edge_int8": {name: dataclasses.asdict(response) for name, response in edge_faults.items()},
            "cloud_fp32": {name: dataclasses.asdict(response) for name, response in cloud_faults.items()},
        },
        "fp32_nodes_in_int8": kept_fp32,
        "seconds": time.perf_counter() - started,
    }


def _task_card(
    *,
    directory: Path,
    data: WindowDataset,
    plan: BuildPlan,
    seed: int,
    commit: str | None,
    results: Mapping[str, VariantResult],
    modules: Mapping[str, nn.Module],
    exports: EdgeExports,
    latencies: Mapping[str, dict[str, float]],
    backend_accuracy: Mapping[str, float],
    backend_agreement: Mapping[str, float],
    edge_faults: Mapping[str, FaultResponse],
    calibration: str,
    peers: Mapping[str, PeerResult],
    notes: Mapping[str, str],
) -> TaskCard:
    example = torch.zeros(1, data.window_size)
    descriptions = {
        "cloud_fp32": (
            f"ensemble of {plan.folds} 1D CNNs {plan.cloud_widths} (weight {notes['cnn_weight']}) blended with a "
            f"MiniRocket-style model of {plan.rocket.cloud_features:,} features (softmax temperature "
            f"{notes['cloud_temperature']}), chosen on out-of-fold negative log-likelihood; in-graph anomaly score."
            f"{notes['blend_outcome']}"
        ),
        "edge_fp32": (
            f"MiniRocket-style model distilled from the cloud model, pruned to {notes['edge_features']} features, "
            f"probabilities calibrated (temperature {notes['edge_temperature']}, out-of-fold); in-graph anomaly "
            "score (shipped beside the int8 model; an agent with fastest_variant runs it where it is faster)"
        ),
        "edge_int8": f"the pruned MiniRocket-style model, static int8 QDQ (head per class); {calibration}",
    }
    metrics = {
        key: {"test_accuracy": results[key].test_accuracy, "val_accuracy": results[key].val_accuracy} for key in NAMES
    }
    metrics["edge_int8"] |= {**backend_accuracy, **_anomaly_metrics(edge_faults)}
    variants = variant_cards(
        directory,
        NAMES,
        exports,
        descriptions=descriptions,
        parameters={key: results[key].parameters for key in NAMES},
        macs={key: multiply_accumulates(modules[key], example) for key in NAMES},
        metrics=metrics,
        latencies=latencies,
    )
    return TaskCard(
        task=TASK,
        summary="winter or summer day, from 24 hourly readings of Italy's electricity demand",
        data=data.describe(),
        validation=f"out-of-fold over the training split ({plan.folds}-fold stratified, seed {seed})",
        input=InputCard(
            name="window",
            shape=[None, data.window_size],
            layout="batch, hourly reading",
            sensor=SensorKind.POWER.value,
            unit="kW",
            sample_rate_hz=1.0 / 3600.0,
            preprocessing=[step.model_dump() for step in PREPROCESSING],
        ),
        labels=list(data.class_names),
        outputs=["probabilities", "anomaly_score"],
        variants=variants,
        peers={
            "1nn_euclidean": PeerCard(
                description="1-nearest-neighbour, Euclidean distance, on the same z-normalized windows",
                metrics={"test_accuracy": round(results["baseline_1nn"].test_accuracy, 6)},
                environment="numpy, in the build",
            ),
            **classifier_peer_cards(peers),
        },
        backend_agreement=rounded(backend_agreement),
        goals=_goals(results, peers, backend_agreement, latencies),
        seed=seed,
        source_commit=commit,
        rebuild=REBUILD,
        software=software_versions(),
        machine=machine_description(),
        kernels=kernel_record(),
    )


def _goals(
    results: Mapping[str, VariantResult],
    peers: Mapping[str, PeerResult],
    backend_agreement: Mapping[str, float],
    latencies: Mapping[str, Mapping[str, float]],
) -> dict[str, str]:
    minirocket = peers["peer_minirocket"].test_accuracy
    edge, cloud = results["edge_int8"].test_accuracy, results["cloud_fp32"].test_accuracy

    def versus(value: float, *, at_least: bool) -> str:
        met = value >= minirocket if at_least else value > minirocket
        verdict = "met" if met else f"missed by {max(minirocket - value, 0.0):.3f}"
        return f"{verdict}: {value:.3f} against MiniRocket's {minirocket:.3f}"

    return {
        "backends_agree": backends_goal(backend_agreement),
        "edge_int8_matches_minirocket": versus(edge, at_least=True),
        "cloud_beats_minirocket": versus(cloud, at_least=False),
    } | ratio_goals(
        TASK,
        latencies,
        {key: results[key].test_accuracy for key in NAMES},
        {key: results[key].bytes or 0 for key in NAMES},
        metric="test accuracy",
    )


def _predict(model: nn.Module, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    return np.asarray(predict_probabilities(model, windows).argmax(axis=-1), dtype=np.int64)


def _check_export(model: nn.Module, path: Path, windows: npt.NDArray[np.float32]) -> None:
    """Fail the build if ONNX Runtime's outputs differ from PyTorch's beyond float rounding."""
    with torch.no_grad():
        probabilities, scores = model(torch.from_numpy(windows))
    exported = OnnxWindowModel(path)(windows)
    if not (
        np.allclose(exported.probabilities, probabilities.numpy(), atol=ROCKET_ATOL)
        and np.allclose(exported.anomaly_score, scores.numpy(), rtol=1e-4, atol=1e-6)
    ):
        raise RuntimeError(f"{path.name}: ONNX Runtime disagrees with PyTorch; the export is wrong")


def _anomaly_metrics(faults: Mapping[str, FaultResponse]) -> dict[str, float]:
    metrics = {"anomaly_clean_false_alarm_rate": faults["clean"].detection_rate}
    for name, response in faults.items():
        metrics[f"anomaly_median_score_{name}"] = response.median_score
        if name != "clean":
            metrics[f"anomaly_detection_rate_{name}"] = response.detection_rate
    return metrics


def _metrics(
    result: VariantResult,
    extra: Mapping[str, float],
    faults: Mapping[str, FaultResponse],
    latencies: Mapping[str, float],
) -> dict[str, float]:
    return {
        "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy,
        **extra,
        **_anomaly_metrics(faults),
        **latency_metrics(latencies),
    }


def _model_card(
    data: WindowDataset,
    plan: BuildPlan,
    seed: int,
    results: Mapping[str, VariantResult],
    edge_faults: Mapping[str, FaultResponse],
    cloud_faults: Mapping[str, FaultResponse],
    agreement: float,
    calibration: str,
    backend_agreement: Mapping[str, float],
    latencies: Mapping[str, dict[str, float]],
    exports: EdgeExports,
    peers: Mapping[str, PeerResult],
    notes: Mapping[str, str],
) -> str:
    train_count, test_count = len(data.train_labels), len(data.test_labels)
    peer_text = "; ".join(f"{peer.description}: {peer.test_accuracy:.3f}" for peer in peers.values())
    goals = bullets(_goals(results, peers, backend_agreement, latencies))
    files = ", ".join(f"`{artifact.file}` ({artifact.bytes:,} bytes)" for artifact in exports.artifacts)
    latency_table = "\n".join(
        f"| `{NAMES[variant]}` | {backend} | {milliseconds * 1000:.0f} |"
        for variant, by_backend in latencies.items()
        for backend, milliseconds in by_backend.items()
    )
    agreements = ", ".join(f"{backend} {share:.1%}" for backend, share in backend_agreement.items()) or "none"
    skipped = skipped_text(exports.skipped)
    rows = "\n".join(
        f"| {result.label} | {result.parameters:,} | {'—' if result.bytes is None else f'{result.bytes:,}'} "
        f"| {result.val_accuracy:.3f} | {result.test_accuracy:.3f} |"
        for result in results.values()
    )
    fault_rows = "\n".join(
        f"| {name} | {edge_faults[name].median_score:.2f} | {edge_faults[name].detection_rate:.1%} "
        f"| {cloud_faults[name].median_score:.2f} | {cloud_faults[name].detection_rate:.1%} |"
        for name in edge_faults
    )
    edge, cloud = results["edge_int8"], results["cloud_fp32"]
    return f"""# Model card: `{TASK}`

Is a day's electricity-demand profile a **winter** (October–March) or a **summer** (April–September) day?
A smart meter streams one reading per hour; the edge agent windows 24 readings (hop 24), z-normalizes the
window, runs `{EDGE_NAME}.onnx` and escalates doubtful or anomalous windows to the hub, which judges them
with `{CLOUD_NAME}.onnx`. Both return `probabilities` (labels `winter`, `summer`) and `anomaly_score`.

## Data

{data.describe()}.
UCR archive's ItalyPowerDemand, bundled with sktime (no download). Class "1" of the archive is `winter`,
class "2" is `summer`. The test split was used only for the figures below: not for
training, model selection, early stopping, calibration or the anomaly threshold.

## Preprocessing

Per window: `(x - mean) / (std + 1e-8)` with the population standard deviation, i.e.
`protocol.preprocessing.preprocess` with `[ZNormalize()]`. The models never see absolute levels, so the
unit in the manifest (kW) matters only to the agent.

## Models

- **Cloud, fp32**: an ensemble of {plan.folds} members, each a 1D CNN (channels {plan.cloud_widths},
  kernels {plan.cloud_kernels}, BatchNorm, ReLU, global average pooling); member *k* is trained on all
  training folds but fold *k* for {plan.cloud_recipe.epochs} epochs (AdamW, one-cycle schedule, label
  smoothing, ±{plan.cloud_recipe.augmentation.max_shift} h shifts and jitter). The members' average is
  **blended** with a MiniRocket-style model (`models/rocket.py`: MiniRocket's 84 fixed kernels at its
  dilations, biases from training quantiles, {plan.rocket.cloud_features:,} PPV features, ridge head on
  standardized features) whose scores become probabilities by a softmax at temperature
  {notes["cloud_temperature"]}; the CNNs weigh {notes["cnn_weight"]}, the rocket the rest. Temperature and
  weight minimize the negative log-likelihood of the out-of-fold predictions.{notes["blend_outcome"]}
- **Edge, int8**: a MiniRocket-style model (one ONNX graph: per dilation and part of the output pooled a
  `Conv` with a channel per feature, PPV pooling by `Clip`, `ReduceMean`, a `Gemm` head, `Softmax`).
  Feature count and share kept chosen by {plan.rocket.selection_folds}-fold cross-validation on the training split
  ({notes["selection"]}). **Distilled** from the cloud model: the ridge head regresses a mix of the
  one-hot labels and the cloud's probabilities on the {train_count} training windows (teacher share
  {plan.rocket.teacher_share:.0%}). **Structurally pruned**: the features that move the head least are
  removed with their bias, head column and convolution channel, and the head is fitted again
  ({notes["edge_features"]} features kept). **Calibrated**: its scores are divided by a temperature
  ({notes["edge_temperature"]}) fitted on out-of-fold scores, folded into the head, so that the agent's
  confidence threshold reads real probabilities. Exported with the legacy TorchScript exporter (opset 17,
  dynamic batch), then statically quantized by ONNX Runtime: QDQ, int8 head weights per class in a 7-bit
  range, int8 PPV features; the front end stays fp32 (`docs/rocket_edge.md`). Calibration: {calibration}.
- **Anomaly score** (both models, in the graph, fp32): mean squared residual of the window outside the
  span of the {plan.anomaly_components} leading singular vectors of the training windows, plus
  `(1 - mean(x²))²` so that a window that normalizes to all zeros (a constant window) is not scored as
  perfect; divided by the 99th percentile of the training windows' raw scores, so 1.0 is that percentile.
  The branch stays fp32 in the int8 graph: int8 would clip the large values that faulty windows produce.
  Its {data.window_size}×{data.window_size} projector is a constant, not counted in the parameters below.

## Metrics

Validation figures are out-of-fold over the {train_count} training windows ({plan.folds}-fold stratified
split, seed {seed}): each window is scored by a model built by the same recipe without it (for the edge,
fit the front end, distil from that fold's cloud blend, prune, export and quantize). One window is
{1 / train_count:.1%} of that figure. Test figures are on the official {test_count} test windows, run
with ONNX Runtime (CPU, one thread) for the three artifacts.

| variant | parameters | bytes | val accuracy (out-of-fold) | test accuracy |
|---|---:|---:|---:|---:|
{rows}

The edge fp32 row is the graph before quantization (shipped for CPUs where int8 is slower). The int8
edge model and the cloud model agree on {agreement:.1%} of the test windows. Peers fitted on the training
split and scored on the test split by the same build, on the same windows: {peer_text}.

Goals (issue 4):
{goals}

The edge agent's demo and its tests run these artifacts, so their bytes change only on purpose.

### Anomaly score on faulted test windows

Faults are injected into the raw test windows before normalization (`models/faults.py`): *spike* — one
reading jumps to mean + 6 std; *stuck_at* — half the window repeats one reading; *dropout* — a quarter of
the window falls to mean − 3 std; *flatline* — the whole window is one reading. "Above 1" is the share of
windows scoring above the training windows' 99th percentile. Edge and cloud columns agree because both
graphs carry the same fp32 anomaly branch.

| windows | edge int8 median score | edge int8 above 1 | cloud median score | cloud above 1 |
|---|---:|---:|---:|---:|
{fault_rows}

## Backends, size and speed

The edge model ships for three runtimes: {files}. The OpenVINO IR is converted from the int8 `.onnx`
(its QDQ pairs become FakeQuantize, so it is the same int8 model). The `.tflite` is converted by
litert-torch from the same model and quantized by it (the head int8 per channel with the `.onnx`'s 7-bit
weights, calibrated on the same training windows); its front end stays fp32 as in the `.onnx`, and so
does its input, shared with the fp32 anomaly branch. It takes one window per call
(`[1, {data.window_size}]`); its outputs are the signature's `output_0` (probabilities) and `output_1`
(anomaly score). Argmax agreement with ONNX Runtime on the {test_count} test windows: {agreements} (the
build fails below 99 %).{skipped}

`{EDGE_NAME}.onnx` is {edge.bytes:,} bytes ({edge.parameters:,} trained parameters);
`{CLOUD_NAME}.onnx` is {cloud.bytes:,} bytes ({cloud.parameters:,} parameters). For a network this small
the QDQ graph is larger than the fp32 one (scales, zero points and the fp32 anomaly projector outweigh the
bytes saved on weights). Median latency of one window, batch of one, one thread, measured by the build on
its machine (see `{TASK}.card.json`; `bench/models.py` measures all tasks side by side):

| artifact | backend | µs per window |
|---|---|---:|
{latency_table}

At this size a window costs a few tens of thousands of multiply-accumulates, so the runtimes' fixed cost per
call, not arithmetic, sets these figures; int8 is no faster than fp32 here.

## Limits

- {train_count} training windows: every figure here is noisy; out-of-fold accuracies move in steps of
  {1 / train_count:.1%}, and with another seed the edge model's test accuracy moves by about a percent.
- Compare with the 1-NN baseline: on this data set a nearest-neighbour rule is strong. The recipes were
  chosen by cross-validation on the training windows alone, which could not tell the variants tried
  (wider, longer, other kernels, other distillation settings) apart; nothing was tuned on the test split.
  The edge model's feature count and pruning were chosen by cross-validation on the training windows.
- The classes are halves of the year, so days near the boundaries (late March, April, late September,
  October) are inherently ambiguous; no model will be certain about them.
- The data are national demand aggregates. A single building's meter has a different daily shape; the
  model must be re-trained (or at least re-validated) before it judges other sources.
- The anomaly threshold is the 99th percentile of only {train_count} windows, essentially their maximum,
  and the subspace is fitted on those same windows: clean test windows score above 1 more often than 1 %
  (see the table). A frozen sensor during a naturally flat stretch of the day looks normal, so stuck-at
  faults are caught less reliably than spikes or dropouts.
- The edge validation figure describes the recipe (fold models fitted, pruned and quantized the same
  way), not the shipped model, which was fitted on all training windows.

## Rebuild

`{REBUILD}` (or `python -m models.italy_power`), seed {seed}. Same seed, same library versions: same
bytes (the manifests also record the commit). Needs the `train` extra; nothing here runs on a device.
"""


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: build, then print a table of the figures."""
    parser = argparse.ArgumentParser(prog="python -m models.italy_power", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT, help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the plan's epochs")
    parser.add_argument("--quick", action="store_true", help="fewer folds and epochs (for tests)")
    arguments = parser.parse_args(argv)
    summary = build(arguments.out, seed=arguments.seed, epochs=arguments.epochs, quick=arguments.quick)

    table = Table(title=f"{TASK}: figures (seed {arguments.seed})")
    for column in ("variant", "parameters", "bytes", "val accuracy", "test accuracy"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant in summary["variants"].values():
        size = "—" if variant["bytes"] is None else f"{variant['bytes']:,}"
        table.add_row(
            variant["label"],
            f"{variant['parameters']:,}",
            size,
            f"{variant['val_accuracy']:.3f}",
            f"{variant['test_accuracy']:.3f}",
        )
    console = Console()
    console.print(table)
    anomaly = summary["anomaly"]["edge_int8"]
    console.print(
        "edge int8 anomaly score, median: "
        + ", ".join(f"{name} {response['median_score']:.2f}" for name, response in anomaly.items())
    )
    console.print(f"written to {arguments.out} in {summary['seconds']:.1f} s")


if __name__ == "__main__":
    pin_kernels()
    main()
