"""The registry of model tasks: what each is, which module builds it, and how to score a committed artifact.

Building needs the ``train`` extra (torch); evaluating a committed artifact needs only the task's data set
package and the runtime chosen, so nothing in this module imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.camera_frames import load_camera
from models.cards import TaskCard, read_card
from models.datasets import (
    LabelledSeries,
    WindowDataset,
    load_acsf1,
    load_basic_motions,
    load_digits,
    load_italy_power,
    load_kdd_tsad_135,
    load_mitdb,
    load_plaid,
)
from models.evaluation import accuracy
from models.runtimes import Backend, load_runner
from models.series_scoring import detection_figures, reading_scores, sliding_windows
from models.signals import apply_preprocessing
from models.speech import load_keywords_pcm16

COMMITTED = Path(__file__).resolve().parent / "quantized"
VARIANTS = ("edge_int8", "edge_fp32", "cloud_fp32")


@dataclass(frozen=True)
class Task:
    """One task: a name, what it decides, and the function whose ``(output_dir, *, seed, quick)`` builds it."""

    name: str
    summary: str
    module: str
    kind: Literal["classification", "anomaly"]
    load: Callable[[], WindowDataset | LabelledSeries]
    """The official split (classification) or the labelled series (anomaly), raw."""
    builder: str = "build"

    def build(self, output_dir: Path, *, seed: int = 0, quick: bool = False) -> dict[str, Any]:
        """Train, export, quantize, convert and evaluate; returns the build's JSON-able summary."""
        module = importlib.import_module(self.module)
        summary: dict[str, Any] = getattr(module, self.builder)(output_dir, seed=seed, quick=quick)
        return summary


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "italy_power",
            "winter or summer day from 24 hourly readings of electricity demand",
            "models.italy_power",
            "classification",
            load_italy_power,
        ),
        Task(
            "basic_motions",
            "badminton, running, standing or walking from 10 s of accelerometer and gyroscope",
            "models.basic_motions",
            "classification",
            load_basic_motions,
        ),
        Task(
            "acsf1",
            "which of 10 appliance types, from a recording of its power draw",
            "models.acsf1",
            "classification",
            load_acsf1,
        ),
        Task(
            "plaid",
            "which of 11 appliance types, from the current it draws",
            "models.plaid",
            "classification",
            load_plaid,
        ),
        Task(
            "digits",
            "which digit, from an 8 × 8 grey image",
            "models.digits",
            "classification",
            load_digits,
        ),
        Task(
            "keywords",
            "which of ten spoken keywords or silence, from one second of audio in noise",
            "models.keywords",
            "classification",
            load_keywords_pcm16,
        ),
        Task(
            "camera",
            "how many objects (none to three) a simulated camera frame shows",
            "models.camera",
            "classification",
            load_camera,
        ),
        Task(
            "anomaly_mitdb",
            "abnormal heartbeats in an ECG (autoencoder trained on normal beats)",
            "models.anomaly_tasks",
            "anomaly",
            load_mitdb,
            builder="build_mitdb",
        ),
        Task(
            "anomaly_kdd135",
            "the anomaly in UCR anomaly archive series 135 (autoencoder; data through .venv-aeon)",
            "models.anomaly_tasks",
            "anomaly",
            load_kdd_tsad_135,
            builder="build_kdd135",
        ),
    )
}


def get_task(name: str) -> Task:
    """The task called ``name``; raises KeyError naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


@dataclass(frozen=True)
class EvaluationInputs:
    """A task's test windows, preprocessed as its card says, and what they are scored against."""

    windows: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    """Class per window (classification), or 0/1 per reading of the series (anomaly)."""
    window: int


def evaluation_inputs(task: Task, card: TaskCard) -> EvaluationInputs:
    """Load the task's test data and preprocess it exactly as the card says."""
    data = task.load()
    if isinstance(data, LabelledSeries):
        window = int(card.input.shape[-1] or 0)
        raw = sliding_windows(data.test, window)
        return EvaluationInputs(apply_preprocessing(raw, card.input.preprocessing), data.test_labels, window)
    windows = apply_preprocessing(data.test_windows, card.input.preprocessing)
    shape = [len(windows)] + [dimension if dimension is not None else -1 for dimension in card.input.shape[1:]]
    return EvaluationInputs(windows.reshape(shape), data.test_labels, int(windows.shape[-1]))


@dataclass(frozen=True)
class Evaluation:
    """A committed artifact's figure on the official test data, run by one backend."""

    task: str
    variant: str
    backend: Backend
    metric: str
    value: float
    recorded: float | None
    """The figure the build recorded in the card for this variant and backend, if any."""
    windows: int


def evaluate(
    task_name: str, backend: Backend, *, variant: str = "edge_int8", directory: Path = COMMITTED
) -> Evaluation:
    """Score ``<task>_<variant>`` from ``directory`` on the test data with ``backend``.

    Classification: accuracy. Anomaly: ROC-AUC per reading (a reading scores the highest of its windows).
    """
    task = get_task(task_name)
    card = read_card(directory, task.name)
    inputs = evaluation_inputs(task, card)
    outputs = load_runner(directory, f"{task.name}_{variant}", backend)(inputs.windows)
    if task.kind == "anomaly":
        metric = "test_roc_auc"
        value = detection_figures(reading_scores(outputs.anomaly_score, inputs.window), inputs.labels).roc_auc
    else:
        metric = "test_accuracy"
        value = accuracy(outputs.predictions, inputs.labels)
    recorded = card.variants[variant].metrics if variant in card.variants else {}
    figure = recorded.get(f"{metric}_{backend}", recorded.get(metric) if backend == "onnxruntime" else None)
    return Evaluation(
        task=task.name,
        variant=variant,
        backend=backend,
        metric=metric,
        value=value,
        recorded=figure,
        windows=len(inputs.windows),
    )
