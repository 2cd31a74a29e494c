"""The recipe shared by the time-series classification tasks: cloud ensemble, distilled and pruned int8 edge model.

For a task (see :class:`ClassificationTask`; ``models/basic_motions.py``, ``models/acsf1.py``):

1. **Cloud, fp32**: an ensemble of 1D CNNs, member *k* trained on all training folds but fold *k*.
2. **Edge**: a student CNN distilled from the ensemble, then **structurally pruned** (the least important
   convolution channels removed, :mod:`models.pruning`) and fine-tuned by distillation again; exported to
   ONNX and statically quantized to int8 (QDQ, per-channel weights, calibrated on training windows), then
   converted for OpenVINO and LiteRT (:mod:`models.packaging`).
3. **Peers** on the same preprocessed split: MiniRocket (sktime, ridge classifier) and 1-NN with DTW.

A task whose plan carries a :class:`models.rocket_recipe.RocketPlan` (``acsf1``)
builds a MiniRocket-style edge model instead of the CNN student (distilled from the cloud by its ridge
head, pruned by features, calibrated, int8 head), and its cloud model blends the CNN ensemble with a full
rocket (:mod:`models.rocket_recipe`).

The official test split is used once, for the figures. Validation figures are out-of-fold: for each fold
the whole recipe (member, student, pruning, fine-tuning, export, calibration, quantization) runs without
that fold and scores it.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.cards import InputCard, TaskCard, machine_description, software_versions, write_card
from models.datasets import WindowDataset
from models.evaluation import accuracy
from models.export import export_onnx, quantize_int8, reads_quantized, source_commit
from models.kernels import kernel_record
from models.networks import (
    AveragedEnsemble,
    ProbabilityModel,
    SeriesClassifier,
    Transposed,
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
    REPOSITORY,
    BuildSteps,
    ManifestCommon,
    agreement_text,
    backends_goal,
    build_steps,
    build_summary,
    bullets,
    classifier_peer_cards,
    edge_files,
    latency_metrics,
    latency_rows,
    measure_latencies,
    ratio_goals,
    rebuild_command,
    rounded,
    skipped_text,
    variant_cards,
    variant_names,
    write_manifests,
)
from models.pruning import prune_channels
from models.rocket import FRONT_END_OPS, RocketClassifier, RocketLogits
from models.rocket_recipe import RocketPlan, fit_rocket_models
from models.runtimes import OnnxRuntimeRunner
from models.signals import apply_preprocessing
from models.training import (
    Distillation,
    Recipe,
    SeriesAugmentation,
    distil,
    make_deterministic,
    predict_probabilities,
    stratified_folds,
    train_classifier,
)
from protocol.manifest import InputSpec, OutputSpec, PreprocessStep
from protocol.messages import SensorKind

OUTPUTS = ("probabilities",)
# Softmax stays fp32 in the int8 graph: int8 probabilities would come in steps of 1/256.
FP32_OP_TYPES = ("Softmax",)
# The first convolution is left out of quantization. Where it reads the raw window, whose outliers (a
# spike of 12 standard deviations in ACSF1) would set a coarse int8 step for all the other samples, it
# stays fp32, and in the .tflite so does the input (LiteRT's converter moves a quantize op at the graph's
# start onto the input itself). Where the graph first normalizes the window (``SeriesClassifier``'s
# input_mean/input_scale), the normalization's output is quantized, and ONNX Runtime and LiteRT then run
# this convolution in int8 anyway; the card says which (``reads_quantized``, docs/decisions.md).
FP32_PREFIXES = ("/classifier/features/features.0/",)
FIRST_CONVOLUTION = "/classifier/features/features.0/Conv"
LITERT_QUANTIZED = "classifier"
LITERT_FP32 = ("classifier.features.0",)


@dataclass(frozen=True)
class Architecture:
    """Widths, kernel sizes and pooling of a :class:`SeriesClassifier`."""

    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    pools: tuple[int, ...]


@dataclass(frozen=True)
class ClassificationPlan:
    """Everything that shapes a build besides the seed."""

    folds: int
    cloud: Architecture
    student: Architecture
    keep_ratio: float
    """Share of each convolution's channels the pruned edge model keeps."""
    cloud_recipe: Recipe
    student_recipe: Recipe
    finetune_recipe: Recipe
    distillation: Distillation = dataclasses.field(default_factory=Distillation)
    rocket: RocketPlan | None = None
    """A MiniRocket-style edge model (and a rocket in the cloud blend) instead of the distilled CNN."""
    transposed_members: bool = False
    """Each fold's cloud member averages a CNN over the rows and one over the columns of the image."""
    distil_from_rows: bool = False
    """The edge student is distilled from the members' row CNNs only (it reads rows, as they do); the cloud
    keeps both views."""

    def __post_init__(self) -> None:
        if self.distil_from_rows and not self.transposed_members:
            raise ValueError("distil_from_rows needs members that are pairs (transposed_members)")

    @property
    def cloud_networks(self) -> int:
        """How many CNNs the cloud ensemble holds: one per fold, two with :attr:`transposed_members`."""
        return self.folds * (2 if self.transposed_members else 1)


@dataclass(frozen=True)
class TrainingShape:
    """The networks and training of a task, whatever the budget: :meth:`plan` adds the folds and epochs.

    The cloud members and the student train with the same recipe; the pruned student is fine-tuned for half
    the epochs.
    """

    cloud: Architecture
    student: Architecture
    batch_size: int
    augmentation: SeriesAugmentation
    keep_ratio: float = 0.5
    distillation: Distillation = dataclasses.field(default_factory=Distillation)
    transposed_members: bool = False
    """Images: each fold's cloud member is a pair, one CNN reading rows as channels, one reading columns."""
    distil_from_rows: bool = False
    """With :attr:`transposed_members`: the student (which reads rows) learns from the members' row CNNs only."""

    def plan(self, *, folds: int, epochs: int, rocket: RocketPlan | None = None) -> ClassificationPlan:
        """The plan of a build with ``folds`` cloud members trained ``epochs`` epochs each (and ``rocket``)."""
        recipe = Recipe(epochs=epochs, batch_size=self.batch_size, augmentation=self.augmentation)
        return ClassificationPlan(
            folds=folds,
            cloud=self.cloud,
            student=self.student,
            keep_ratio=self.keep_ratio,
            cloud_recipe=recipe,
            student_recipe=recipe,
            finetune_recipe=dataclasses.replace(recipe, epochs=epochs // 2),
            distillation=self.distillation,
            rocket=rocket,
            transposed_members=self.transposed_members,
            distil_from_rows=self.distil_from_rows,
        )


@dataclass(frozen=True)
class ClassificationTask:
    """A classification task's data, input recipe, plans and the words of its card."""

    name: str
    version: str
    summary: str
    load: Callable[[], WindowDataset]
    preprocessing: tuple[dict[str, Any], ...]
    """Card steps before the graph (see :mod:`models.signals`)."""
    manifest_preprocessing: tuple[PreprocessStep, ...] | None
    """The same steps as protocol steps, or None when the protocol cannot express them yet."""
    affine_in_graph: bool
    """Per-channel mean and standard deviation of the training windows, applied as the graph's first step."""
    sensor: SensorKind
    unit: str
    sample_rate_hz: float | None
    layout: str
    full: ClassificationPlan
    quick: ClassificationPlan
    about: str
    """Markdown paragraphs on the data and the task, for the card."""
    limits: tuple[str, ...] = ()
    peers_flatten: bool = False
    """Give the peers each window flattened to one series (MiniRocket needs series of 9 samples or more)."""
    raw_window_size: int | None = None
    """Values in one raw window as a device delivers it (flat), where preprocessing changes the length (MFCC,
    images); None: the preprocessed window's length."""


@dataclass(frozen=True)
class VariantResult:
    """Figures of one variant for the summary, the manifests and the cards."""

    label: str
    parameters: int
    val_accuracy: float | None
    test_accuracy: float
    bytes: int | None
    macs: int | None = None


def _network(
    task: ClassificationTask, data: WindowDataset, train: npt.NDArray[np.float32], shape: Architecture
) -> nn.Module:
    mean = std = None
    if task.affine_in_graph:
        axes = (0, 2) if train.ndim == 3 else (0, 1)
        mean = np.atleast_1d(train.mean(axis=axes)).tolist()
        std = np.atleast_1d(train.std(axis=axes) + 1e-6).tolist()
    return SeriesClassifier(
        _channels(train),
        shape.widths,
        shape.kernels,
        shape.pools,
        len(data.class_names),
        input_mean=mean,
        input_std=std,
    )


def _channels(windows: npt.NDArray[np.float32]) -> int:
    return 1 if windows.ndim == 2 else int(windows.shape[1])


def _input_shape(windows: npt.NDArray[np.float32]) -> list[int | None]:
    """The graph's input shape, from preprocessed windows (raw ones may differ in length)."""
    return [None, *(int(size) for size in windows.shape[1:])]


def _predict(model: nn.Module, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    return np.asarray(predict_probabilities(model, windows).argmax(axis=-1), dtype=np.int64)


ROCKET_ATOL = 0.05
"""ONNX Runtime against torch for rocket graphs (1e-5 for the CNNs). A convolution output within float
rounding of its bias may fall on the other side of it in the other runtime, moving one PPV feature by one
step (1/1,460 on ACSF1); through a calibrated head (a temperature of a few tenths, weights of tens) that
moves a probability by up to a few hundredths. A wrong export moves them far more."""


def _export(model: nn.Module, path: Path, check: npt.NDArray[np.float32], *, atol: float = 1e-5) -> Path:
    channels = _channels(check) if check.ndim == 3 else None
    export_onnx(ProbabilityModel(model), path, window_size=check.shape[-1], output_names=OUTPUTS, channels=channels)
    with torch.no_grad():
        expected = ProbabilityModel(model).eval()(torch.from_numpy(check)).numpy()
    if not np.allclose(OnnxRuntimeRunner(path)(check).probabilities, expected, atol=atol):
        raise RuntimeError(f"{path.name}: ONNX Runtime disagrees with PyTorch; the export is wrong")
    return path


CALIBRATION_SHARES = (1.0, 0.99, 0.95)
"""Shares of the training windows, those with the smallest peaks, tried as calibration sets."""


@dataclass(frozen=True)
class Quantized:
    """How the int8 model was calibrated."""

    windows: npt.NDArray[np.float32]
    share: float
    agreement: float
    kept_fp32: list[str]


def _quantize(
    fp32_path: Path,
    int8_path: Path,
    windows: npt.NDArray[np.float32],
    scratch: Path,
) -> Quantized:
    """Quantize with the calibration set that keeps int8 closest to fp32 on the training windows.

    MinMax calibration takes each activation's range from its extremes: a few training windows with
    outlying peaks (a PLAID recording of 18 standard deviations) can stretch a range so far that the
    usual values fall into a handful of int8 steps; measured on PLAID's training windows, int8 then
    disagreed with fp32 on a quarter of them. So the windows with the largest peaks may be left out of
    calibration; which share is chosen by agreement with fp32 on all training windows (no test data).
    """
    scratch.mkdir(parents=True, exist_ok=True)
    reference = OnnxRuntimeRunner(fp32_path)(windows).predictions
    peaks = np.abs(windows).reshape(len(windows), -1).max(axis=1)
    best: tuple[float, float, npt.NDArray[np.float32], list[str], Path] | None = None
    for share in CALIBRATION_SHARES:
        subset = windows[peaks <= np.quantile(peaks, share)] if share < 1.0 else windows
        candidate = scratch / f"calibrated_{share}.onnx"
        kept = quantize_int8(
            fp32_path,
            candidate,
            subset,
            exclude_prefixes=FP32_PREFIXES,
            exclude_op_types=FP32_OP_TYPES,
        )
        agreement = float(np.mean(OnnxRuntimeRunner(candidate)(windows).predictions == reference))
        if best is None or agreement > best[0]:  # ties keep the larger calibration set
            best = (agreement, share, subset, kept, candidate)
    assert best is not None
    agreement, share, subset, kept, candidate = best
    shutil.copyfile(candidate, int8_path)
    return Quantized(windows=subset, share=share, agreement=agreement, kept_fp32=kept)


def _edge_student(
    task: ClassificationTask,
    plan: ClassificationPlan,
    data: WindowDataset,
    teacher: nn.Module,
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    *,
    seed: int,
    advance: Callable[[], None],
) -> tuple[nn.Module, nn.Module]:
    """Distil the student from ``teacher``, prune it, fine-tune it by distillation; returns (before, after)."""
    student = distil(
        _network(task, data, windows, plan.student),
        teacher,
        windows,
        labels,
        plan.student_recipe,
        plan.distillation,
        seed=seed,
        advance=advance,
    )
    assert isinstance(student, SeriesClassifier)
    pruned = prune_channels(student, plan.keep_ratio)
    tuned = distil(
        pruned, teacher, windows, labels, plan.finetune_recipe, plan.distillation, seed=seed + 1, advance=advance
    )
    return student, tuned


@dataclass
class Trained:
    """What a recipe leaves for the shared evaluation: models, out-of-fold predictions, exported artifacts."""

    cloud: nn.Module
    """Returns logits (or log-probabilities); exported as the cloud fp32 variant."""
    unpruned: nn.Module
    """The edge model before pruning (not shipped), returning logits."""
    edge: nn.Module
    """The shipped edge model, returning logits."""
    held_out: dict[str, npt.NDArray[np.int64]]
    """Out-of-fold predictions on the training windows of ``cloud``, ``edge_fp32`` and ``edge_int8``."""
    calibration: str
    exports: EdgeExports
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    """Figures of the recipe the card states (rocket: temperatures, blend weight, selection)."""


def _progress_total(plan: ClassificationPlan) -> int:
    """Steps of the progress bar: training epochs, and one step per rocket fit."""
    if plan.rocket is None:
        per_student = plan.student_recipe.epochs + plan.finetune_recipe.epochs
        return plan.cloud_networks * plan.cloud_recipe.epochs + (plan.folds + 1) * per_student
    return plan.folds * (plan.cloud_recipe.epochs + 2) + 3


def _cloud_member(
    task: ClassificationTask,
    plan: ClassificationPlan,
    data: WindowDataset,
    train: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    fit: npt.NDArray[np.int64],
    index: int,
    *,
    seed: int,
    run: BuildSteps,
) -> nn.Module:
    """Cloud member ``index`` of the ensemble, trained on the windows ``fit`` (all folds but its own).

    With ``plan.transposed_members``, the member averages two CNNs: one over the image's rows (as channels),
    one over its columns (:class:`models.networks.Transposed`), each trained with its own seed.
    """
    run.describe(f"cloud member {index + 1}/{plan.folds}")

    def trained(windows: npt.NDArray[np.float32], member_seed: int) -> nn.Module:
        network = _network(task, data, windows, plan.cloud)
        return train_classifier(network, windows, labels[fit], plan.cloud_recipe, seed=member_seed, advance=run.advance)

    rows = trained(train[fit], seed * 1000 + index)
    if not plan.transposed_members:
        return rows
    columns = trained(np.ascontiguousarray(train[fit].transpose(0, 2, 1)), seed * 1000 + 500 + index)
    return AveragedEnsemble([rows, Transposed(columns)]).eval()


def _student_teacher(plan: ClassificationPlan, member: nn.Module) -> nn.Module:
    """What the edge student learns from in ``member``: all of it, or its row CNN (``plan.distil_from_rows``)."""
    if not plan.distil_from_rows:
        return member
    assert isinstance(member, AveragedEnsemble)  # a pair: rows, then Transposed(columns)
    return member.members[0]


def _train_cnn(
    task: ClassificationTask,
    plan: ClassificationPlan,
    data: WindowDataset,
    train: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    output_dir: Path,
    names: Mapping[str, str],
    run: BuildSteps,
    *,
    seed: int,
) -> Trained:
    """Cloud CNN ensemble; edge CNN distilled, channel-pruned, fine-tuned, int8."""
    scratch, describe, advance = run.scratch, run.describe, run.advance
    paths = {variant: output_dir / f"{name}.onnx" for variant, name in names.items()}
    held_out = {variant: np.empty(len(train), np.int64) for variant in ("cloud", "edge_fp32", "edge_int8")}
    members: list[nn.Module] = []
    teachers: list[nn.Module] = []
    for index, fold in enumerate(stratified_folds(labels, plan.folds, np.random.default_rng(seed))):
        fit = np.setdiff1d(np.arange(len(train)), fold)
        member = _cloud_member(task, plan, data, train, labels, fit, index, seed=seed, run=run)
        members.append(member)
        teachers.append(_student_teacher(plan, member))
        held_out["cloud"][fold] = _predict(member, train[fold])
        describe(f"edge student, fold {index + 1}/{plan.folds}")
        _, fold_edge = _edge_student(
            task, plan, data, teachers[-1], train[fit], labels[fit], seed=seed * 1000 + 100 + 2 * index, advance=advance
        )
        held_out["edge_fp32"][fold] = _predict(fold_edge, train[fold])
        fold_fp32 = _export(fold_edge, scratch / f"fold{index}_fp32.onnx", train[fit][:8])
        _quantize(fold_fp32, scratch / f"fold{index}_int8.onnx", train[fit], scratch / f"fold{index}")
        held_out["edge_int8"][fold] = OnnxRuntimeRunner(scratch / f"fold{index}_int8.onnx")(train[fold]).predictions

    cloud = AveragedEnsemble(members).eval()
    describe("edge student, all training windows")
    teacher = AveragedEnsemble(teachers).eval() if plan.distil_from_rows else cloud
    student, edge = _edge_student(task, plan, data, teacher, train, labels, seed=seed * 1000 + 999, advance=advance)

    describe("export and quantize")
    _export(cloud, paths["cloud_fp32"], train[:8])
    _export(edge, paths["edge_fp32"], train[:8])
    quantized = _quantize(paths["edge_fp32"], paths["edge_int8"], train, scratch / "final")
    exports = export_edge_backends(
        output_dir,
        names["edge_int8"],
        ProbabilityModel(edge),
        quantized.windows,
        quantized_prefix=LITERT_QUANTIZED,
        fp32_prefixes=LITERT_FP32,
        describe=describe,
    )
    calibration = (
        f"MinMax over the {len(quantized.windows)} preprocessed training windows with the smallest peaks "
        f"({quantized.share:.0%} of {len(train)}: of {', '.join(f'{share:.0%}' for share in CALIBRATION_SHARES)}, "
        f"the share whose int8 model agrees best with fp32 on all training windows, {quantized.agreement:.1%}; "
        f"test split unused); left out of quantization: the first convolution and Softmax "
        f"({len(quantized.kept_fp32)} nodes)"
    )
    first_layer = (
        "the first convolution is left out of quantization, but it reads the graph's own per-channel "
        "normalization of the window, whose output is quantized, so it runs in int8 all the same (ONNX "
        "Runtime quantizes the weights of a layer between quantized tensors itself, and LiteRT's converter "
        "does too); Softmax kept fp32"
        if reads_quantized(paths["edge_int8"], FIRST_CONVOLUTION)
        else "the first convolution, which reads the raw window and whose outliers would coarsen every int8 "
        "step, and Softmax kept fp32"
    )
    return Trained(cloud, student, edge, held_out, calibration, exports, {"first_layer": first_layer})


ROCKET_FP32_OP_TYPES = (*FRONT_END_OPS, "Concat", "Softmax")
"""Kept fp32 in a rocket edge model's int8 graph: the front end (see :data:`models.rocket.FRONT_END_OPS`), the
``Concat`` of its features (so that the features are quantized once, as the head's input) and Softmax; the
PPV features and the head are int8."""
ROCKET_REDUCE_RANGE = True
"""Rocket heads are quantized with 7-bit weights. The head multiplies hundreds of PPV features, which fill
the int8 range, by weights that fill it too; ONNX Runtime's x86 kernels without VNNI (this build machine's
AMD EPYC) add pairs of such products in 16 bits and saturate. Measured on PLAID with full-range weights:
ONNX Runtime's int8 model agreed with OpenVINO's (the same QDQ graph) on 98.3 % of the test windows; with
7-bit weights on 100 %. The ``.tflite`` gets the same 7-bit weights (litert-torch would otherwise round to
8 bits, and its model then agreed with ONNX Runtime's on only 98.1–99.4 % of PLAID's test windows; with
the same integer weights on 100 %). The CNNs' int8 layers do not reach the limit (their backends agree at
99 % or more)."""
ROCKET_LITERT_QUANTIZED = "classifier.model.head"


def _train_rocket(
    task: ClassificationTask,
    plan: ClassificationPlan,
    rocket: RocketPlan,
    data: WindowDataset,
    train: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    output_dir: Path,
    names: Mapping[str, str],
    run: BuildSteps,
    *,
    seed: int,
) -> Trained:
    """Cloud: CNN ensemble blended with a full rocket; edge: a distilled, pruned, calibrated rocket (int8 head).

    See :mod:`models.rocket_recipe`. Out-of-fold predictions choose the cloud's rocket temperature and blend
    weight and the edge's temperature; cross-validation on the training split chooses the edge's features.
    """
    scratch, describe, advance = run.scratch, run.describe, run.advance
    paths = {variant: output_dir / f"{name}.onnx" for variant, name in names.items()}
    folds = stratified_folds(labels, plan.folds, np.random.default_rng(seed))
    members: list[nn.Module] = []
    for index, fold in enumerate(folds):
        fit = np.setdiff1d(np.arange(len(train)), fold)
        members.append(_cloud_member(task, plan, data, train, labels, fit, index, seed=seed, run=run))
    fitted = fit_rocket_models(
        train, labels, len(data.class_names), folds, members, rocket, seed=seed, describe=describe, advance=advance
    )
    held_out = fitted.held_out | {"edge_int8": rocket_held_out_int8(fitted.fold_edges, folds, train, scratch)}
    edge = RocketLogits(fitted.calibrated_edge).eval()

    describe("export and quantize")
    _export(fitted.cloud, paths["cloud_fp32"], train[:8], atol=ROCKET_ATOL)
    _export(edge, paths["edge_fp32"], train[:8], atol=ROCKET_ATOL)
    kept = quantize_int8(
        paths["edge_fp32"],
        paths["edge_int8"],
        train,
        exclude_op_types=ROCKET_FP32_OP_TYPES,
        reduce_range=ROCKET_REDUCE_RANGE,
    )
    exports = export_edge_backends(
        output_dir,
        names["edge_int8"],
        ProbabilityModel(edge),
        train,
        quantized_prefix=ROCKET_LITERT_QUANTIZED,
        reduce_range=ROCKET_REDUCE_RANGE,
        describe=describe,
    )
    calibration = (
        f"MinMax over all {len(train)} preprocessed training windows (test split unused); int8: the PPV "
        f"features and the head (7-bit weights, see ROCKET_REDUCE_RANGE); kept fp32: the front end's "
        f"convolutions and comparisons and Softmax ({len(kept)} nodes)"
    )
    return Trained(
        fitted.cloud, RocketLogits(fitted.edge.unpruned), edge, held_out, calibration, exports, fitted.notes()
    )


def rocket_held_out_int8(
    fold_edges: Sequence[RocketClassifier],
    folds: Sequence[npt.NDArray[np.int64]],
    train: npt.NDArray[np.float32],
    scratch: Path,
) -> npt.NDArray[np.int64]:
    """Out-of-fold predictions of the fold edge models exported and quantized as the shipped one is."""
    predictions = np.empty(len(train), np.int64)
    for index, (fold, model) in enumerate(zip(folds, fold_edges, strict=True)):
        fit = np.setdiff1d(np.arange(len(train)), fold)
        fold_fp32 = _export(RocketLogits(model), scratch / f"fold{index}_fp32.onnx", train[fit][:8], atol=ROCKET_ATOL)
        fold_int8 = scratch / f"fold{index}_int8.onnx"
        quantize_int8(
            fold_fp32, fold_int8, train[fit], exclude_op_types=ROCKET_FP32_OP_TYPES, reduce_range=ROCKET_REDUCE_RANGE
        )
        predictions[fold] = OnnxRuntimeRunner(fold_int8)(train[fold]).predictions
    return predictions


def task_builder(task: ClassificationTask) -> Callable[..., dict[str, Any]]:
    """The registry's ``build(output_dir, *, seed, quick)`` of ``task``."""

    def build_task(output_dir: Path, *, seed: int = 0, quick: bool = False) -> dict[str, Any]:
        return build_classification(task, output_dir, seed=seed, quick=quick)

    build_task.__doc__ = f"Build ``{task.name}`` (see :func:`build_classification`)."
    return build_task


def build_classification(
    task: ClassificationTask, output_dir: Path, *, seed: int = 0, quick: bool = False
) -> dict[str, Any]:
    """Build every variant of ``task`` into ``output_dir``: artifacts, manifests, card JSON and markdown card."""
    started = time.perf_counter()
    plan = task.quick if quick else task.full
    output_dir.mkdir(parents=True, exist_ok=True)
    make_deterministic(seed)
    data = task.load()
    steps = list(task.preprocessing)
    train = apply_preprocessing(data.train_windows, steps)
    test = apply_preprocessing(data.test_windows, steps)
    labels = data.train_labels
    names = variant_names(task.name)
    paths = {variant: output_dir / f"{name}.onnx" for variant, name in names.items()}
    with build_steps(task.name, _progress_total(plan)) as run:
        if plan.rocket is None:
            trained = _train_cnn(task, plan, data, train, labels, output_dir, names, run, seed=seed)
        else:
            trained = _train_rocket(task, plan, plan.rocket, data, train, labels, output_dir, names, run, seed=seed)
        cloud, student, edge, held_out, exports = (
            trained.cloud,
            trained.unpruned,
            trained.edge,
            trained.held_out,
            trained.exports,
        )
        describe = run.describe

        # The first and only use of the test split: figures for the record.
        describe("evaluate on the test split")
        test_predictions = {variant: OnnxRuntimeRunner(path)(test).predictions for variant, path in paths.items()}
        backends = available_backends(output_dir, names["edge_int8"])
        per_backend = backend_predictions(output_dir, names["edge_int8"], test, backends)
        backend_agreement = agreement(per_backend, strict=False)
        describe("latency per window")
        latencies = measure_latencies(output_dir, names, test[0], backends)
        describe("peers: MiniRocket, 1-NN DTW")
        if task.peers_flatten:
            peers = run_peers(
                train.reshape(len(train), -1), labels, test.reshape(len(test), -1), data.test_labels, seed=seed
            )
        else:
            peers = run_peers(train, labels, test, data.test_labels, seed=seed)

    example = torch.from_numpy(test[:1])
    val = {variant: accuracy(predictions, labels) for variant, predictions in held_out.items()}
    results = {
        "cloud_fp32": VariantResult(
            f"cloud fp32 (ensemble of {plan.cloud_networks})",
            parameter_count(cloud),
            val["cloud"],
            accuracy(test_predictions["cloud_fp32"], data.test_labels),
            paths["cloud_fp32"].stat().st_size,
            multiply_accumulates(cloud, example),
        ),
        "edge_unpruned": VariantResult(
            "edge fp32 before pruning (not shipped)",
            parameter_count(student),
            None,
            accuracy(_predict(student, test), data.test_labels),
            None,
            multiply_accumulates(student, example),
        ),
        "edge_fp32": VariantResult(
            "edge fp32 (distilled, pruned)",
            parameter_count(edge),
            val["edge_fp32"],
            accuracy(test_predictions["edge_fp32"], data.test_labels),
            paths["edge_fp32"].stat().st_size,
            multiply_accumulates(edge, example),
        ),
        "edge_int8": VariantResult(
            "edge int8 (QDQ static)",
            parameter_count(edge),
            val["edge_int8"],
            accuracy(test_predictions["edge_int8"], data.test_labels),
            paths["edge_int8"].stat().st_size,
            multiply_accumulates(edge, example),
        ),
    }
    for key, peer in peers.items():
        results[key] = VariantResult(peer.description, 0, None, peer.test_accuracy, None)
    backend_accuracy = {
        f"test_accuracy_{backend}": accuracy(predictions, data.test_labels)
        for backend, predictions in per_backend.items()
    }
    commit = source_commit(REPOSITORY)
    calibration = trained.calibration
    manifests = _write_manifests(task, data, train, output_dir, names, results, latencies, commit, calibration, exports)
    card = _task_card(
        task,
        plan,
        data,
        train,
        output_dir,
        names,
        results,
        exports,
        latencies,
        backend_accuracy,
        backend_agreement,
        peers,
        seed,
        commit,
        calibration,
        trained.notes,
    )
    card_path = write_card(card, output_dir)
    markdown = output_dir / f"{task.name}.md"
    markdown.write_text(
        _markdown(task, plan, data, card, results, exports.skipped, seed, calibration, trained.notes), encoding="utf-8"
    )
    return build_summary(
        task.name,
        seed=seed,
        quick=quick,
        paths=paths,
        manifests=manifests,
        markdown=markdown,
        card=card_path,
        variants={key: dataclasses.asdict(result) for key, result in results.items()},
        backend_agreement=backend_agreement,
        backend_accuracy=backend_accuracy,
        latency_ms=latencies,
        skipped=exports.skipped,
        seconds=time.perf_counter() - started,
    )


def _metrics(result: VariantResult) -> dict[str, float]:
    metrics = {"test_accuracy": result.test_accuracy}
    if result.val_accuracy is not None:
        metrics["val_accuracy"] = result.val_accuracy
    return metrics


def _write_manifests(
    task: ClassificationTask,
    data: WindowDataset,
    train: npt.NDArray[np.float32],
    directory: Path,
    names: Mapping[str, str],
    results: Mapping[str, VariantResult],
    latencies: Mapping[str, Mapping[str, float]],
    commit: str | None,
    calibration: str,
    exports: EdgeExports,
) -> list[Path]:
    """Protocol manifests of the three variants, when the protocol can express the input."""
    if task.manifest_preprocessing is None:
        return []
    peers = {f"{key}_accuracy": result.test_accuracy for key, result in results.items() if key.startswith("peer")}
    common = ManifestCommon(
        task=task.name,
        version=task.version,
        input=InputSpec(
            name="window",
            shape=_input_shape(train),
            sensor=task.sensor,
            unit=task.unit,
            window_size=task.raw_window_size or train.shape[-1],
            hop=task.raw_window_size or train.shape[-1],
            sample_rate_hz=task.sample_rate_hz,
            preprocessing=list(task.manifest_preprocessing),
        ),
        output=OutputSpec(probabilities="probabilities", labels=list(data.class_names)),
        data=data.describe(),
        commit=commit,
        calibration=calibration,
        exports=exports,
    )
    return write_manifests(
        common,
        directory,
        names,
        parameters={variant: results[variant].parameters for variant in names},
        # Key order as before the shared pipeline: test figure, peers, validation figure.
        metrics={
            variant: {"test_accuracy": results[variant].test_accuracy, **peers, **_metrics(results[variant])}
            | latency_metrics(latencies[variant])
            for variant in names
        },
    )


def _task_card(
    task: ClassificationTask,
    plan: ClassificationPlan,
    data: WindowDataset,
    train: npt.NDArray[np.float32],
    directory: Path,
    names: Mapping[str, str],
    results: Mapping[str, VariantResult],
    exports: EdgeExports,
    latencies: Mapping[str, dict[str, float]],
    backend_accuracy: Mapping[str, float],
    backend_agreement: Mapping[str, float],
    peers: Mapping[str, PeerResult],
    seed: int,
    commit: str | None,
    calibration: str,
    notes: Mapping[str, str],
) -> TaskCard:
    descriptions = _descriptions(plan, results, calibration, notes)
    metrics = {variant: _metrics(results[variant]) for variant in names}
    metrics["edge_int8"] |= dict(backend_accuracy)
    variants = variant_cards(
        directory,
        names,
        exports,
        descriptions=descriptions,
        parameters={variant: results[variant].parameters for variant in names},
        macs={variant: results[variant].macs or 0 for variant in names},
        metrics=metrics,
        latencies=latencies,
    )
    in_graph = ["per-channel (x - mean) / std with the training windows' statistics"] if task.affine_in_graph else []
    minirocket = peers["peer_minirocket"].test_accuracy
    goals = {
        "backends_agree": backends_goal(backend_agreement),
        "edge_int8_matches_minirocket": _goal(results["edge_int8"].test_accuracy, minirocket, at_least=True),
        "cloud_beats_minirocket": (
            "not applicable: MiniRocket is at 100 %"
            if minirocket >= 1.0
            else _goal(results["cloud_fp32"].test_accuracy, minirocket, at_least=False)
        ),
    } | ratio_goals(
        task.name,
        latencies,
        {variant: results[variant].test_accuracy for variant in names},
        {variant: results[variant].bytes or 0 for variant in names},
        metric="test accuracy",
    )
    return TaskCard(
        task=task.name,
        summary=task.summary,
        data=data.describe(),
        validation=f"out-of-fold over the training split ({plan.folds}-fold stratified, seed {seed})",
        input=InputCard(
            name="window",
            shape=_input_shape(train),
            layout=task.layout,
            sensor=task.sensor.value,
            unit=task.unit,
            sample_rate_hz=task.sample_rate_hz,
            preprocessing=list(task.preprocessing),
            in_graph=in_graph,
        ),
        labels=list(data.class_names),
        outputs=list(OUTPUTS),
        variants=variants,
        peers=classifier_peer_cards(peers),
        backend_agreement=rounded(backend_agreement),
        goals=goals,
        seed=seed,
        source_commit=commit,
        rebuild=rebuild_command(task.name),
        software=software_versions(),
        machine=machine_description(),
        kernels=kernel_record(),
    )


def _descriptions(
    plan: ClassificationPlan, results: Mapping[str, VariantResult], calibration: str, notes: Mapping[str, str]
) -> dict[str, str]:
    """One line per variant for the card JSON."""
    shipped_beside = "shipped beside the int8 model; an agent with fastest_variant runs it where it is faster"
    if plan.rocket is not None:
        return {
            "cloud_fp32": (
                f"ensemble of {plan.folds} CNNs, channels {plan.cloud.widths}, kernels {plan.cloud.kernels} (weight "
                f"{notes['cnn_weight']}), blended with a MiniRocket-style model of {plan.rocket.cloud_features:,} "
                f"features (softmax temperature {notes['cloud_temperature']}); weight and temperature chosen on "
                "out-of-fold negative log-likelihood" + (f".{notes['blend_outcome']}" if notes["blend_outcome"] else "")
            ),
            "edge_fp32": (
                f"MiniRocket-style model distilled from the cloud model, pruned to {notes['edge_features']} "
                f"features, probabilities calibrated (temperature {notes['edge_temperature']}, out-of-fold; "
                f"{shipped_beside})"
            ),
            "edge_int8": f"the pruned MiniRocket-style model, static int8 QDQ (head per class); {calibration}",
        }
    views = ", half of them reading the image's columns as channels" if plan.transposed_members else ""
    source = "'s CNNs over the rows" if plan.distil_from_rows else ""
    return {
        "cloud_fp32": (
            f"ensemble of {plan.cloud_networks} CNNs, channels {plan.cloud.widths}, kernels {plan.cloud.kernels}{views}"
        ),
        "edge_fp32": (
            f"CNN distilled from the ensemble{source}, channels {plan.student.widths} pruned to "
            f"{results['edge_fp32'].parameters:,} parameters ({shipped_beside})"
        ),
        "edge_int8": f"the pruned CNN, static int8 QDQ (per-channel); {calibration}",
    }


def _goal(value: float, peer: float, *, at_least: bool) -> str:
    met = value >= peer if at_least else value > peer
    verb = "matches or beats" if at_least else "beats"
    if met:
        return f"met: {value:.3f} {verb} MiniRocket's {peer:.3f}"
    if value == peer:
        return f"missed: {value:.3f} only equals MiniRocket's {peer:.3f}"
    return f"missed by {peer - value:.3f}: {value:.3f} against MiniRocket's {peer:.3f}"


def _markdown(
    task: ClassificationTask,
    plan: ClassificationPlan,
    data: WindowDataset,
    card: TaskCard,
    results: Mapping[str, VariantResult],
    skipped: Mapping[str, str],
    seed: int,
    calibration: str,
    notes: Mapping[str, str],
) -> str:
    def cell(value: float | int | None, pattern: str) -> str:
        return "—" if value is None else format(value, pattern)

    rows = "\n".join(
        f"| {result.label} | {cell(result.parameters or None, ',')} | {cell(result.macs, ',')} "
        f"| {cell(result.bytes, ',')} | {cell(result.val_accuracy, '.3f')} | {result.test_accuracy:.3f} |"
        for result in results.values()
    )
    latencies = latency_rows(task.name, card)
    files = edge_files(card)
    steps = (
        "; ".join(
            f"`{step['op']}({', '.join(f'{key}={value}' for key, value in step.items() if key != 'op')})`"
            for step in card.input.preprocessing
        )
        or "none"
    )
    in_graph = "; ".join(card.input.in_graph) or "none"
    edge, cloud = results["edge_int8"], results["cloud_fp32"]
    models = _models_markdown(plan, results, calibration, notes)
    litert_fp32 = "its front end" if plan.rocket is not None else "its first convolution"
    litert_weights = ", 7 bits as in the `.onnx`" if plan.rocket is not None else ""
    manifests = (
        f"`{task.name}_cloud_fp32.manifest.json` and `{task.name}_edge_int8.manifest.json` are the protocol manifests."
        if task.manifest_preprocessing is not None
        else "No protocol manifest: the protocol cannot express this input's preprocessing yet (see the card JSON)."
    )
    return f"""# Model card: `{task.name}`

{task.summary[0].upper() + task.summary[1:]}.

## Data

{data.describe()}. {task.about}
The test split was used only for the figures below: not for training, model selection, early stopping,
calibration or pruning.

## Input

Shape {card.input.shape} ({card.input.layout}), {card.input.sensor} in {card.input.unit}. Steps before the
graph, in order: {steps}. Steps inside the graph: {in_graph}. `{task.name}.card.json` holds all of it in
machine-readable form. {manifests}

## Models

{models}

## Metrics

Validation figures are out-of-fold over the {len(data.train_labels)} training windows: each window is scored by
the recipe run without its fold (for the edge, distil from that fold's member, prune, fine-tune, export,
calibrate, quantize). Test figures are on the official {len(data.test_labels)} test windows (ONNX Runtime,
CPU, one thread). Peers are fitted on the training split and scored on the test split by the same build,
on the same preprocessed windows.

| variant | parameters | MACs per window | bytes | val accuracy (out-of-fold) | test accuracy |
|---|---:|---:|---:|---:|---:|
{rows}

Goals (issue 4):
{bullets(card.goals)}

## Backends, size and speed

The edge model ships for three runtimes: {files}. The OpenVINO IR is converted from the int8 `.onnx` (same
int8 model). The `.tflite` is converted by litert-torch from the same pruned student and quantized by it
(int8 per-channel weights{litert_weights}, activations calibrated by min and max on the same windows as ONNX
Runtime's);
{litert_fp32} stays fp32 as in the `.onnx`. It takes one window per call; its output is the
signature's `output_0`. Argmax agreement with ONNX Runtime on the test windows: {agreement_text(card)} (goal 99 %,
checked by the tests).{skipped_text(skipped)}

The edge int8 `.onnx` is {edge.bytes:,} bytes, {cell(edge.bytes and cloud.bytes and edge.bytes / cloud.bytes, ".1%")}
of the cloud model's {cloud.bytes:,}. Median latency of one window (batch of one, one thread) measured by
the build on its machine ({card.machine}); `bench/models.py` measures all tasks side by side:

| artifact | backend | µs per window |
|---|---|---:|
{latencies}

## Limits

{bullets(task.limits)}
- The edge validation figure describes the recipe (fold students pruned and quantized the same way), not
  the shipped student, which was trained on all training windows.

## Rebuild

`edgefleet models build {task.name}`, seed {seed}. Same seed and library versions: same `.onnx` bytes.
Needs the `train` extra, and `.venv-litert` (`python -m models.environments litert`) for the `.tflite`.
"""


def _models_markdown(
    plan: ClassificationPlan,
    results: Mapping[str, VariantResult],
    calibration: str,
    notes: Mapping[str, str],
) -> str:
    """The card's "Models" section: the recipe that made the variants."""
    edge, unpruned = results["edge_int8"], results["edge_unpruned"]
    source = (
        "'s CNNs over the rows (it reads the rows as they do; what the columns' CNNs see it cannot imitate)"
        if plan.distil_from_rows
        else ""
    )
    transposed = (
        f" Each fold has two members, {plan.cloud_networks} in all: one reads the image's rows as channels (as the "
        "edge model does), the other its columns (the image transposed in the graph), each trained from its own "
        "seed (the pair was preferred by cross-validation on the training split: `docs/decisions.md`)."
        if plan.transposed_members
        else ""
    )
    first_line = (
        f"- **Cloud, fp32**: {plan.cloud_networks} CNNs (channels {plan.cloud.widths}, "
        f"kernels {plan.cloud.kernels}, max-pooling"
    )
    if plan.rocket is not None:
        rocket = plan.rocket
        return f"""{first_line}
  {plan.cloud.pools}, BatchNorm, ReLU, global average pooling), member *k* trained without fold *k* for
  {plan.cloud_recipe.epochs} epochs (AdamW, one-cycle schedule, label smoothing, time shifts, jitter,
  amplitude scaling), probabilities averaged; **blended** with a MiniRocket-style model
  (`models/rocket.py`: MiniRocket's 84 fixed kernels at its dilations, biases from training quantiles,
  {rocket.cloud_features:,} PPV features, ridge head on standardized features) whose scores become
  probabilities by a softmax at temperature {notes["cloud_temperature"]}. The CNNs weigh {notes["cnn_weight"]}, the
  rocket the rest. Temperature and weight minimize the negative log-likelihood of the out-of-fold
  predictions (each fold's CNN and rocket fitted without it).{notes["blend_outcome"]}
- **Edge**: a MiniRocket-style model (one ONNX graph: per dilation and part of the output pooled a `Conv`
  with a channel per feature, PPV pooling by `Clip`, `ReduceMean`, a `Gemm` head, `Softmax`). Its feature
  count and the share it keeps were chosen by {rocket.selection_folds}-fold cross-validation on the training
  split ({notes["selection"]}).
  **Distilled** from the cloud model: the ridge head regresses a mix of the one-hot labels and the cloud's
  probabilities on the training windows (teacher share {rocket.teacher_share:.0%}). **Structurally pruned**: the
  features that move the head's scores least are removed with their bias, head column and convolution
  channel, and the head is fitted again: {notes["edge_features"]}
  features kept, multiply-accumulates {unpruned.macs:,} → {edge.macs:,} per window (convolutions and head).
  **Calibrated**: its scores are divided by a temperature ({notes["edge_temperature"]}) fitted on out-of-fold
  scores, folded into the head, so that its probabilities can be read against the agent's confidence
  threshold. Exported with the legacy exporter (opset 17, dynamic batch) and statically quantized by ONNX
  Runtime (QDQ, int8 head weights per class in a 7-bit range, int8 PPV features): the front end stays
  fp32, since one int8 scale per convolution output moves values across the PPV thresholds
  (`docs/rocket_edge.md`).
  Calibration: {calibration}."""
    return f"""{first_line}
  {plan.cloud.pools}, BatchNorm, ReLU, global average pooling), member *k* trained without fold *k* for
  {plan.cloud_recipe.epochs} epochs (AdamW, one-cycle schedule, label smoothing, time shifts, jitter,
  amplitude scaling); probabilities averaged.{transposed}
- **Edge**: a CNN with channels {plan.student.widths} distilled from the ensemble{source} on all training windows for
  {plan.student_recipe.epochs} epochs (temperature {plan.distillation.temperature}, mixup labelled by the
  teacher), then **structurally pruned**: each convolution keeps its {plan.keep_ratio:.0%} most important
  channels (filter L1 norm × BatchNorm scale), the others are removed with the weights that read them, so
  multiply-accumulates fall from {unpruned.macs:,} to {edge.macs:,} per window; then fine-tuned by
  distillation for {plan.finetune_recipe.epochs} epochs. Exported with the legacy exporter (opset 17, dynamic
  batch) and statically quantized by ONNX Runtime (QDQ, int8 weights per channel, int8 activations,
  MinMax calibration on training windows, leaving out those with outlying peaks where that keeps int8
  closer to fp32 on the training windows; {notes["first_layer"]}). Calibration: {calibration}."""


def run_command_line(
    build: Callable[..., dict[str, Any]], program: str, description: str, argv: list[str] | None = None
) -> None:
    """The ``python -m models.<task>`` entry every classification task shares."""

    parser = argparse.ArgumentParser(prog=program, description=description.splitlines()[0] if description else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "quantized")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args(argv)
    summary = build(arguments.out, seed=arguments.seed, quick=arguments.quick)
    for key, variant in summary["variants"].items():
        print(f"{key:<16} test {variant['test_accuracy']:.3f}  val {variant['val_accuracy']}")
