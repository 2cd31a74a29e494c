"""Task ``basic_motions``: badminton, running, standing or walking, from 10 s of a wrist-worn IMU.

The edge model reads raw accelerometer and gyroscope readings (6 channels × 100 samples at 10 Hz); a
fixed per-channel normalization is the graph's first step, because the level and spread of motion
(standing against running) is the signal itself. Run ``python -m models.basic_motions [--quick]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.classification import (
    Architecture,
    ClassificationPlan,
    ClassificationTask,
    build_classification,
    run_command_line,
)
from models.datasets import load_basic_motions
from models.training import Distillation, Recipe, SeriesAugmentation
from protocol.messages import SensorKind

AUGMENTATION = SeriesAugmentation(max_shift=10, noise=0.05, scale=0.1, renormalize=False)


def _recipe(epochs: int) -> Recipe:
    return Recipe(epochs=epochs, batch_size=16, augmentation=AUGMENTATION)


def _plan(folds: int, epochs: int) -> ClassificationPlan:
    return ClassificationPlan(
        folds=folds,
        cloud=Architecture(widths=(64, 128, 64), kernels=(7, 5, 3), pools=(2, 2, 1)),
        student=Architecture(widths=(16, 32, 32), kernels=(7, 5, 3), pools=(2, 2, 1)),
        keep_ratio=0.5,
        cloud_recipe=_recipe(epochs),
        student_recipe=_recipe(epochs),
        finetune_recipe=_recipe(epochs // 2),
        distillation=Distillation(),
    )


TASK = ClassificationTask(
    name="basic_motions",
    version="1.0.0",
    summary="badminton, running, standing or walking, from 10 s of a wrist-worn accelerometer and gyroscope",
    load=load_basic_motions,
    preprocessing=(),
    manifest_preprocessing=(),
    affine_in_graph=True,
    sensor=SensorKind.ACCELERATION,
    unit="accelerometer and gyroscope readings as recorded (6 channels)",
    sample_rate_hz=10.0,
    layout="batch, channel (accel x, y, z, gyro x, y, z), sample",
    full=_plan(folds=5, epochs=200),
    quick=_plan(folds=2, epochs=30),
    about=(
        "UEA archive's BasicMotions, bundled with sktime (no download): a smart watch's accelerometer and "
        "gyroscope, 10 Hz, 10 s per series, four activities, ten series per class in each split."
    ),
    limits=(
        "Forty test series: one series is 2.5 % of the test figure, and every method here scores near 100 %.",
        "Four people in the data; a new wearer, watch or wrist changes the signal. Re-validate before trusting it.",
        "The manifest's sensor kind is `acceleration`; the protocol has no kind for a combined IMU stream, and the "
        "archive does not state the units (the readings are used as recorded).",
    ),
)


def build(output_dir: Path, *, seed: int = 0, quick: bool = False, epochs: int | None = None) -> dict[str, Any]:
    """Build the task (see :func:`models.classification.build_classification`)."""
    del epochs  # the plans fix them; kept for the registry's common signature
    return build_classification(TASK, output_dir, seed=seed, quick=quick)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    run_command_line(build, "python -m models.basic_motions", __doc__ or "", argv)


if __name__ == "__main__":
    main()
