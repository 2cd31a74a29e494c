"""MiniRocket-style edge models (``models/rocket.py``) against sktime's MiniRocket and the committed edge int8.

    python bench/rocket_edge.py [--tasks italy_power plaid acsf1] [--rounds 7] [--calls 100]
                                [--out /tmp/rocket-edge] [--json FILE]

For each task, in one run and on the task's own preprocessing (the card's steps):

1. sktime's MiniRocket (``RocketClassifier``, MiniRocket transform, 10,000 features, ridge), configured as
   ``models/peers.py`` configures it, fitted on the training split;
2. the feature count (1,000 / 3,000 / 10,000) of the full model, and the feature count and fraction kept
   by pruning (0.5 / 0.25 / 0.1) of the pruned one, chosen by 5-fold cross-validation on the training split
   only (``select_configuration``: the pruned model is the smallest within 1 point of the full one);
3. the full and the pruned model fitted on the whole training split, exported to fp32 ONNX and to static
   int8 QDQ (ONNX Runtime, calibrated on training windows); ONNX Runtime's fp32 outputs checked against
   torch's;
4. diagnostics, accuracy only: the full model with MiniRocket's standardized ridge head (fp32 and int8) and
   with its front end quantized too;
5. test accuracy (the official test split, used for nothing else), artifact bytes, and per-window latency
   (batch of one, one thread, ONNX Runtime) of every deployable variant and of the committed
   ``models/quantized/<task>_edge_int8.onnx`` (read only), timed in interleaved rounds: each figure is
   the median over rounds of the per-round median.

Scratch files go to ``--out`` (default a directory under /tmp); nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models.datasets import WindowDataset, load_acsf1, load_italy_power, load_plaid  # noqa: E402
from models.signals import apply_preprocessing  # noqa: E402
from models.tasks import COMMITTED  # noqa: E402

ZNORM: dict[str, Any] = {"op": "znorm"}
TASKS: dict[str, tuple[Callable[[], WindowDataset], tuple[dict[str, Any], ...]]] = {
    # The cards' input recipes (models/italy_power.py, models/plaid.py, models/acsf1.py).
    "italy_power": (load_italy_power, (ZNORM,)),
    "plaid": (load_plaid, (ZNORM, {"op": "fit_length", "length": 512, "pad": 0.0})),
    "acsf1": (load_acsf1, (ZNORM,)),
}
SEED = 0


@dataclass
class Variant:
    """One measured variant of a task."""

    name: str
    test_accuracy: float
    bytes: int | None = None
    latency_ms: float | None = None
    features: int | None = None
    macs: int | None = None
    note: str = ""


@dataclass
class TaskResult:
    """Everything measured for one task."""

    task: str
    selection: dict[str, float]
    n_features: int
    keep: float
    pruned_from: int
    pruned_within_tolerance: bool
    torch_onnx_max_difference: float
    variants: list[Variant] = field(default_factory=list)
    seconds: float = 0.0


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_probabilities(session: Any, windows: npt.NDArray[np.float32], batch: int = 64) -> npt.NDArray[np.float32]:
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: windows[start : start + batch]})[0] for start in range(0, len(windows), batch)]
    return np.concatenate(parts).astype(np.float32)


def _accuracy(session: Any, windows: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    return float(np.mean(_onnx_probabilities(session, windows).argmax(axis=1) == labels))


def _minirocket(
    train: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], test: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    """sktime's MiniRocket, as ``models/peers.py`` runs it (1-NN DTW, the other peer, is left out here)."""
    from sktime.classification.kernel_based import RocketClassifier

    classifier = RocketClassifier(rocket_transform="minirocket", random_state=SEED, n_jobs=1)
    fitted = classifier.fit(np.asarray(train, dtype=np.float64)[:, np.newaxis, :], labels)
    return np.asarray(fitted.predict(np.asarray(test, dtype=np.float64)[:, np.newaxis, :])).astype(np.int64)


def _latencies(
    sessions: Mapping[str, Any], window: npt.NDArray[np.float32], rounds: int, calls: int
) -> dict[str, float]:
    """Interleaved rounds (every variant once per round, ``calls`` calls each); median of per-round medians."""
    batch = np.ascontiguousarray(window[np.newaxis], dtype=np.float32)
    feeds = {name: {session.get_inputs()[0].name: batch} for name, session in sessions.items()}
    for name, session in sessions.items():
        for _ in range(20):
            session.run(None, feeds[name])
    per_round: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                session.run(None, feeds[name])
                samples.append(time.perf_counter() - started)
            per_round[name].append(statistics.median(samples) * 1e3)
    return {name: statistics.median(values) for name, values in per_round.items()}


def measure(task: str, out: Path, *, rounds: int, calls: int) -> TaskResult:
    """Select, fit, export, quantize and measure one task."""
    import torch

    from models import rocket

    started = time.perf_counter()
    load, steps = TASKS[task]
    data = load()
    train = apply_preprocessing(data.train_windows, steps)
    test = apply_preprocessing(data.test_windows, steps)
    labels, test_labels = data.train_labels, data.test_labels
    n_classes = len(data.class_names)
    directory = out / task
    directory.mkdir(parents=True, exist_ok=True)

    peer = float(np.mean(_minirocket(train, labels, test) == test_labels))
    print(f"{task}: MiniRocket (sktime) test accuracy {peer:.3f}; cross-validating on the training split", flush=True)
    selection = rocket.select_configuration(train, labels, n_classes, seed=SEED)
    features = rocket.fit_features(train, selection.n_features, seed=SEED)
    full = rocket.fit_rocket(train, labels, n_classes, features=features)
    base = full
    if selection.pruned_features != selection.n_features:
        smaller = rocket.fit_features(train, selection.pruned_features, seed=SEED)
        base = rocket.fit_rocket(train, labels, n_classes, features=smaller)
    pruned = rocket.prune_rocket(base, train, labels, selection.keep, features=rocket.transform(base.front, train))
    standardized = rocket.fit_rocket(train, labels, n_classes, features=features, standardize=True)

    paths = {
        "full": rocket.export_rocket(full, directory, "full", train),
        "pruned": rocket.export_rocket(pruned, directory, "pruned", train),
        "std_head": rocket.export_rocket(standardized, directory, "std_head", train),
        "int8_front": rocket.export_rocket(full, directory, "int8_front", train, quantize_front_end=True),
    }
    full_fp32 = _session(paths["full"][0])
    with torch.no_grad():
        reference = full(torch.from_numpy(test)).numpy()
    difference = float(np.abs(reference - _onnx_probabilities(full_fp32, test)).max())

    result = TaskResult(
        task=task,
        selection={f"{count}x{keep}": accuracy for (count, keep), accuracy in selection.accuracy.items()},
        n_features=len(full.front.features),
        keep=selection.keep,
        pruned_from=len(base.front.features),
        pruned_within_tolerance=selection.pruned_within_tolerance,
        torch_onnx_max_difference=difference,
    )
    result.variants.append(Variant("MiniRocket (sktime, fp64, 9,996 features)", peer, features=9996))
    deployable: dict[str, Any] = {}
    for key, model in (("full", full), ("pruned", pruned)):
        for precision, path in zip(("fp32", "int8"), paths[key], strict=True):
            name = f"rocket {key} {precision}"
            session = full_fp32 if (key, precision) == ("full", "fp32") else _session(path)
            deployable[name] = session
            result.variants.append(
                Variant(
                    name,
                    _accuracy(session, test, test_labels),
                    bytes=path.stat().st_size,
                    features=len(model.front.features),
                    macs=model.front.multiply_accumulates(),
                )
            )
    diagnostics = (
        ("rocket full fp32, standardized head", paths["std_head"][0], "MiniRocket's head; not deployed"),
        ("rocket full int8, standardized head", paths["std_head"][1], "int8 weights of that head"),
        ("rocket full int8, front end int8 too", paths["int8_front"][1], "Conv, Clip, ReduceMean quantized too"),
    )
    for name, path, note in diagnostics:
        accuracy = _accuracy(_session(path), test, test_labels)
        result.variants.append(Variant(name, accuracy, bytes=path.stat().st_size, note=note))

    committed = COMMITTED / f"{task}_edge_int8.onnx"
    if committed.is_file():
        # Copied first: other processes may rewrite the committed artifacts while this runs.
        copy = directory / committed.name
        copy.write_bytes(committed.read_bytes())
        session = _session(copy)
        deployable["committed edge int8"] = session
        result.variants.append(
            Variant(
                "committed edge int8 (CNN)",
                _accuracy(session, test, test_labels),
                bytes=copy.stat().st_size,
                note="models/quantized, read only",
            )
        )
    latency = _latencies(deployable, test[0], rounds, calls)
    for variant in result.variants:
        key = "committed edge int8" if variant.name.startswith("committed") else variant.name
        variant.latency_ms = latency.get(key)
    result.seconds = time.perf_counter() - started
    return result


def _table(result: TaskResult) -> str:
    lines = [
        f"## {result.task}: full {result.n_features} features; pruned: {result.keep:g} of {result.pruned_from} "
        f"({'within' if result.pruned_within_tolerance else 'NOT within'} 1 point of full in CV); "
        f"torch vs ONNX Runtime fp32 max |Δp| {result.torch_onnx_max_difference:.1e}",
        "",
        "| variant | features | test accuracy | bytes | latency ms | front-end MACs | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for variant in result.variants:
        cells = (
            variant.name,
            "" if variant.features is None else f"{variant.features:,}",
            f"{variant.test_accuracy:.3f}",
            "" if variant.bytes is None else f"{variant.bytes:,}",
            "" if variant.latency_ms is None else f"{variant.latency_ms:.3f}",
            "" if variant.macs is None else f"{variant.macs:,}",
            variant.note,
        )
        lines.append("| " + " | ".join(cells) + " |")
    cv = ", ".join(f"{key} {value:.3f}" for key, value in result.selection.items())
    lines += ["", f"cross-validated accuracy (features x kept): {cv}", f"({result.seconds:.0f} s)", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=["italy_power", "plaid", "acsf1"], choices=sorted(TASKS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100, help="calls per variant per round")
    parser.add_argument("--out", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    arguments = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    out = arguments.out or Path(tempfile.mkdtemp(prefix="rocket-edge-"))
    results = []
    for task in arguments.tasks:
        result = measure(task, out, rounds=arguments.rounds, calls=arguments.calls)
        results.append(result)
        print(_table(result), flush=True)
    if arguments.json is not None:
        arguments.json.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
