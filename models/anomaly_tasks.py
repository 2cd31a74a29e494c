"""Anomaly tasks on real labelled series: ECG (mitdb) and the UCR anomaly archive's series 135.

Each trains autoencoders on the series' normal stretch and scores its labelled stretch (see
:mod:`models.series_anomaly`). Run ``python -m models.anomaly_tasks TASK [--quick]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.datasets import load_kdd_tsad_135, load_mitdb
from models.kernels import pin_kernels
from models.series_anomaly import AutoencoderPlan, EdgeRecipe, SeriesAnomalyTask, build_series_anomaly
from protocol.messages import SensorKind

WINDOW = 128
EDGE_RECIPES = (
    EdgeRecipe("distilled_keep50", teacher_weight=0.5, keep_ratio=0.5),
    EdgeRecipe("teacher_only_keep50", teacher_weight=1.0, keep_ratio=0.5),
    EdgeRecipe("distilled_keep75", teacher_weight=0.5, keep_ratio=0.75),
    EdgeRecipe("teacher_only_keep75", teacher_weight=1.0, keep_ratio=0.75),
)
"""The edge candidates: the student distilled from the cloud ensemble, with half or all of its loss on the
ensemble's reconstructions, pruned to half or three quarters of its hidden units. The build keeps the best
on validation data (see :func:`models.series_anomaly.choose_candidate`); ``docs/decisions.md`` says why no
candidate learns from the inputs alone any more."""


def _plan(epochs: int, train_hop: int) -> AutoencoderPlan:
    return AutoencoderPlan(
        cloud_widths=(256, 256, 128),
        cloud_bottleneck=8,
        student_widths=(128, 128, 64),
        edge_bottleneck=8,
        edge_recipes=EDGE_RECIPES,
        epochs=epochs,
        finetune_epochs=max(1, epochs // 2),
        train_hop=train_hop,
    )


MITDB = SeriesAnomalyTask(
    name="anomaly_mitdb",
    version="1.0.0",
    summary="abnormal heartbeats in an ECG, by an autoencoder trained on normal beats (mitdb)",
    load=load_mitdb,
    window=WINDOW,
    sensor=SensorKind.VOLTAGE,
    unit="mV",
    sample_rate_hz=360.0,
    full=_plan(epochs=100, train_hop=2),
    quick=_plan(epochs=8, train_hop=4),
    about=(
        "An excerpt of the MIT-BIH arrhythmia database bundled with sktime (no download): 7500 readings "
        "(about 21 s at 360 Hz) with one labelled abnormal run of 352 readings near the end."
    ),
    limits=(
        "The split (first third to train) is ours, fixed before looking at the labels; it leaves 2000 "
        "readings, a few seconds of heartbeats, to learn what normal looks like.",
        "ECG is not a machine signal: the task stands in for the machine-signal anomaly detector with real "
        "labels; the same recipe applies to a vibration or current series.",
        "The edge recipe is chosen on validation data alone among four candidates, all distilled from the "
        "cloud ensemble (half or all of the loss on its reconstructions, half or three quarters of the units "
        "kept; see Choice of the edge recipe). The choice is noisy: the candidates' validation figures differ "
        "by less than their spread over the injections, and builds of other kernels chose otherwise. With "
        "MKL on its AVX2 branch, an AMD EPYC chose `teacher_only_keep75` (test int8 ROC-AUC 0.973, best F1 "
        "0.878) and an Intel Xeon `distilled_keep50` (0.960, 0.877); builds since commit bd985fe run MKL on "
        "the branch that is alike on both (the card's `kernels`), and this one chose `distilled_keep75`. "
        "That change was made for reproducibility, after a trial build under it had given this build's "
        "figures. Earlier candidate sets, with students trained on the inputs alone, had scored 0.947 to "
        "0.983 over seeds and processors (`docs/decisions.md`). No choice saw the labelled stretch.",
    ),
)

KDD_TSAD_135 = SeriesAnomalyTask(
    name="anomaly_kdd135",
    version="1.0.0",
    summary="an anomaly in a physiological series (UCR anomaly archive, series 135), by an autoencoder",
    load=load_kdd_tsad_135,
    window=WINDOW,
    sensor=SensorKind.GENERIC,
    unit="as recorded",
    sample_rate_hz=None,
    full=_plan(epochs=100, train_hop=1),
    quick=_plan(epochs=8, train_hop=2),
    about=(
        "Series 135 (InternalBleeding16) of the UCR time-series anomaly archive (KDD Cup 2021), bundled with "
        "aeon and read through `.venv-aeon` (aeon's numba pin keeps numpy below 2.4, so it has its own "
        "environment): 1200 normal readings to train on, 7501 to score, 12 of them labelled anomalous."
    ),
    limits=(
        "Twelve anomalous readings out of 7501: ROC-AUC rests on them alone, and best F1 on a handful of windows.",
        "aeon's Daphnet file carries no anomaly labels and is not used here.",
        "The archive does not state a sample rate: the simulator's faults are scheduled per reading (1 Hz).",
        "The edge recipe chosen on validation data moved with the processor while MKL ran its AVX2 branch "
        "(see `anomaly_mitdb`'s card): an AMD EPYC chose `distilled_keep75` (test int8 ROC-AUC 0.99080, "
        "5.6e-06 below the discord's 0.99081), an Intel Xeon with AVX-512 `inputs_keep50` (0.99149), a "
        "student trained on the inputs alone that is no longer a candidate. This build (MKL's branch alike "
        "on both, the card's `kernels`) chose `distilled_keep75` too, with other weights. With twelve "
        "labelled readings, differences of this size are a reading's rank or less: the edge model matches "
        "the discord rather than beats it; seeds 1 and 2 of an earlier build scored 0.99153 and 0.99152.",
    ),
)

TASKS = {task.name: task for task in (MITDB, KDD_TSAD_135)}


def _builder(task: SeriesAnomalyTask) -> Callable[..., dict[str, Any]]:
    def build(output_dir: Path, *, seed: int = 0, quick: bool = False) -> dict[str, Any]:
        return build_series_anomaly(task, output_dir, seed=seed, quick=quick)

    build.__doc__ = f"Build ``{task.name}`` (see :func:`models.series_anomaly.build_series_anomaly`)."
    return build


build_mitdb = _builder(MITDB)
build_kdd135 = _builder(KDD_TSAD_135)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m models.anomaly_tasks", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "quantized")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args(argv)
    summary = build_series_anomaly(TASKS[arguments.task], arguments.out, seed=arguments.seed, quick=arguments.quick)
    for key, variant in summary["variants"].items():
        print(f"{key:<20} ROC-AUC {variant['test_roc_auc']:.3f}  best F1 {variant['test_best_f1']:.3f}")


if __name__ == "__main__":
    pin_kernels()
    main()
