"""Benchmark of every task's committed models, measured side by side in one run.

    python bench/models.py [--rounds 7] [--calls 200] [--tasks italy_power basic_motions] [--json FILE]

For each task with a card in ``models/quantized``: per-window latency (batch of one, one thread, single
stream) of the cloud fp32 model, the edge fp32 model (ONNX Runtime) and the edge int8 model on every
installed backend. The variants are timed in interleaved rounds (every variant once per round, ``calls``
calls each) so that machine load falls on all of them alike; each figure is the median over rounds of the
per-round median. Quality is the test figure the build recorded (accuracy; ROC-AUC for anomaly tasks),
which the tests check the committed artifacts reproduce. Ratios, against the goals of issue 4:

- latency cloud fp32 / edge int8 (goal ≥ 10×) and edge fp32 / edge int8 (goal ≥ 1.5×), ONNX Runtime;
- quality retained, edge int8 / cloud test figure (goal ≥ 0.97);
- size, edge int8 / cloud bytes (goal ≤ 0.25).

Where int8 is slower than fp32 the table says so and names the faster variant, which is the one an agent
should run on this CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models.cards import CARD_SUFFIX, read_card  # noqa: E402
from models.runtimes import BACKENDS, RuntimeMissingError, WindowRunner, load_runner  # noqa: E402
from models.tasks import COMMITTED, evaluation_inputs, get_task  # noqa: E402

GOALS = {"cloud_over_int8": 10.0, "fp32_over_int8": 1.5, "quality_retained": 0.97, "size_ratio": 0.25}
console = Console(width=max(Console().width, 132))  # the latency table has six columns


@dataclass
class TaskFigures:
    """One task's measured figures."""

    task: str
    latency_ms: dict[str, float]
    metric: str
    quality: dict[str, float]
    bytes: dict[str, int]
    cloud_over_int8: float
    fp32_over_int8: float
    quality_retained: float
    size_ratio: float
    faster_edge_variant: str
    """The faster of edge fp32 and edge int8 on ONNX Runtime: the manifest an agent on this CPU should load."""
    fastest_edge: str
    """The fastest edge artifact and backend of all measured."""


def _time_calls(runner: WindowRunner, window: np.ndarray, calls: int) -> float:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        runner(window)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e3


def measure(task_name: str, directory: Path, *, rounds: int, calls: int, progress: Progress) -> TaskFigures:
    """Measure one task's variants side by side."""
    task = get_task(task_name)
    card = read_card(directory, task_name)
    inputs = evaluation_inputs(task, card)
    runners: dict[str, WindowRunner] = {
        "cloud_fp32 onnxruntime": load_runner(directory, f"{task_name}_cloud_fp32", "onnxruntime"),
        "edge_fp32 onnxruntime": load_runner(directory, f"{task_name}_edge_fp32", "onnxruntime"),
    }
    for backend in BACKENDS:
        try:
            runners[f"edge_int8 {backend}"] = load_runner(directory, f"{task_name}_edge_int8", backend)
        except (FileNotFoundError, RuntimeMissingError) as exc:
            console.print(f"[yellow]{task_name}: edge_int8 on {backend} skipped: {exc}[/]")
    # Quality as recorded by the build (the tests check that the committed artifacts reproduce it).
    metric = "test_accuracy" if task.kind == "classification" else "test_roc_auc"
    quality = {variant: entry.metrics[metric] for variant, entry in card.variants.items()}
    window = inputs.windows[:1]
    for runner in runners.values():  # warm-up: first calls allocate and compile
        for _ in range(20):
            runner(window)
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    bar = progress.add_task(f"{task_name}", total=rounds * len(runners))
    for _ in range(rounds):
        for name, runner in runners.items():
            per_round[name].append(_time_calls(runner, window, calls))
            progress.advance(bar)
    latency = {name: statistics.median(values) for name, values in per_round.items()}
    sizes = {
        variant: sum(artifact.bytes for artifact in entry.artifacts if artifact.backend == "onnxruntime")
        for variant, entry in card.variants.items()
    }
    int8 = latency["edge_int8 onnxruntime"]
    fp32 = latency["edge_fp32 onnxruntime"]
    return TaskFigures(
        task=task_name,
        latency_ms=latency,
        metric=metric,
        quality=quality,
        bytes=sizes,
        cloud_over_int8=latency["cloud_fp32 onnxruntime"] / int8,
        fp32_over_int8=fp32 / int8,
        quality_retained=quality["edge_int8"] / quality["cloud_fp32"],
        size_ratio=sizes["edge_int8"] / sizes["cloud_fp32"],
        faster_edge_variant="edge_int8" if int8 <= fp32 else "edge_fp32",
        fastest_edge=min((name for name in latency if name.startswith("edge")), key=latency.__getitem__),
    )


def _mark(value: float, goal: float, *, at_most: bool = False) -> str:
    met = value <= goal if at_most else value >= goal
    return f"{'[green]' if met else '[red]'}{value:.2f}[/]"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200, help="calls per variant per round")
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every task with a committed card")
    parser.add_argument("--dir", type=Path, default=COMMITTED)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    arguments = parser.parse_args(argv)
    tasks = arguments.tasks or sorted(
        path.name.removesuffix(CARD_SUFFIX) for path in arguments.dir.glob(f"*{CARD_SUFFIX}")
    )

    figures = []
    with Progress(console=console) as progress:
        for task in tasks:
            try:
                figures.append(
                    measure(task, arguments.dir, rounds=arguments.rounds, calls=arguments.calls, progress=progress)
                )
            except (FileNotFoundError, ModuleNotFoundError) as exc:  # a task whose data needs a side environment
                console.print(f"[yellow]{task}: skipped, its test data cannot be loaded: {exc}[/]")

    latency = Table(title="Median latency per window (µs), batch of one, one thread")
    columns = ["cloud_fp32 onnxruntime", "edge_fp32 onnxruntime", *(f"edge_int8 {backend}" for backend in BACKENDS)]
    latency.add_column("task")
    for column in columns:
        latency.add_column(column.replace(" ", "\n"), justify="right")
    for figure in figures:
        latency.add_row(
            figure.task,
            *(f"{figure.latency_ms[column] * 1000:.0f}" if column in figure.latency_ms else "—" for column in columns),
        )
    console.print(latency)

    ratios = Table(title="Ratios (goals: cloud/int8 ≥ 10, fp32/int8 ≥ 1.5, quality ≥ 0.97, size ≤ 0.25)")
    for column in (
        "task",
        "cloud/int8 latency",
        "fp32/int8 latency",
        "quality retained",
        "size int8/cloud",
        "faster edge (ONNX Runtime)",
        "fastest edge",
    ):
        ratios.add_column(column, justify="left" if column == "task" else "right")
    for figure in figures:
        ratios.add_row(
            figure.task,
            _mark(figure.cloud_over_int8, GOALS["cloud_over_int8"]),
            _mark(figure.fp32_over_int8, GOALS["fp32_over_int8"]),
            _mark(figure.quality_retained, GOALS["quality_retained"]),
            _mark(figure.size_ratio, GOALS["size_ratio"], at_most=True),
            figure.faster_edge_variant,
            figure.fastest_edge,
        )
    console.print(ratios)
    slower = [figure.task for figure in figures if figure.faster_edge_variant == "edge_fp32"]
    if slower:
        console.print(
            f"int8 is slower than fp32 on this CPU for: {', '.join(slower)} — at these sizes the runtime's fixed "
            "cost per call dominates and the quantize/dequantize steps add to it; an agent should run edge_fp32 there "
            "(with fastest_variant = true it times both on its device and does)."
        )
    if arguments.json is not None:
        arguments.json.write_text(json.dumps([asdict(figure) for figure in figures], indent=2) + "\n")


if __name__ == "__main__":
    main()
