"""Task ``basic_motions``: badminton, running, standing or walking, from 10 s of a wrist-worn IMU.

The edge model reads raw accelerometer and gyroscope readings (6 channels × 100 samples at 10 Hz); a
fixed per-channel normalization is the graph's first step, because the level and spread of motion
(standing against running) is the signal itself. Run ``python -m models.basic_motions [--quick]``.
"""

from __future__ import annotations

from models.classification import Architecture, ClassificationTask, TrainingShape, run_command_line, task_builder
from models.datasets import load_basic_motions
from models.kernels import pin_kernels
from models.training import SeriesAugmentation
from protocol.messages import SensorKind

SHAPE = TrainingShape(
    cloud=Architecture(widths=(64, 128, 64), kernels=(7, 5, 3), pools=(2, 2, 1)),
    student=Architecture(widths=(16, 32, 32), kernels=(7, 5, 3), pools=(2, 2, 1)),
    batch_size=16,
    augmentation=SeriesAugmentation(max_shift=10, noise=0.05, scale=0.1, renormalize=False),
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
    full=SHAPE.plan(folds=5, epochs=200),
    quick=SHAPE.plan(folds=2, epochs=30),
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

build = task_builder(TASK)

if __name__ == "__main__":
    pin_kernels()
    run_command_line(build, "python -m models.basic_motions", __doc__ or "")
