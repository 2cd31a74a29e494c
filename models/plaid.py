"""Task ``plaid``: which of 11 appliance types, from the current it draws (PLAID, unequal lengths).

Each recording is z-normalized over its own samples, then cut or zero-padded to 512 samples (a device
streaming at the recordings' rate delivers full 512-sample windows, for which the second step does
nothing). Cutting or padding, not resampling: cross-validated on the training split, MiniRocket scored
0.89 on cut-or-padded recordings and 0.80 on recordings resampled to 256 samples, since resampling
changes the apparent frequency of the mains cycle. Run ``python -m models.plaid [--quick]``.
"""

from __future__ import annotations

from models.classification import Architecture, ClassificationTask, TrainingShape, run_command_line, task_builder
from models.datasets import load_plaid
from models.kernels import pin_kernels
from models.rocket_recipe import RocketPlan
from models.training import SeriesAugmentation
from protocol.manifest import FitLength, ZNormalize
from protocol.messages import SensorKind

WINDOW = 512
SHAPE = TrainingShape(
    cloud=Architecture(widths=(32, 64, 64, 64), kernels=(9, 7, 5, 3), pools=(2, 2, 2, 1)),
    student=Architecture(widths=(16, 32, 32, 32), kernels=(9, 7, 5, 3), pools=(2, 2, 2, 1)),
    batch_size=32,
    augmentation=SeriesAugmentation(max_shift=8, noise=0.03, scale=0.1, renormalize=False),
)

TASK = ClassificationTask(
    name="plaid",
    version="1.0.0",
    summary="which of 11 appliance types, from the current it draws (PLAID)",
    load=load_plaid,
    preprocessing=(ZNormalize().model_dump(), FitLength(length=WINDOW, pad=0.0).model_dump()),
    manifest_preprocessing=(ZNormalize(), FitLength(length=WINDOW, pad=0.0)),
    affine_in_graph=False,
    sensor=SensorKind.CURRENT,
    unit="A",
    sample_rate_hz=None,  # the archive's series are resampled from 30 kHz; it does not state their rate
    layout="batch, sample",
    full=SHAPE.plan(folds=5, epochs=100, rocket=RocketPlan()),
    quick=SHAPE.plan(folds=2, epochs=10, rocket=RocketPlan.quick()),
    about=(
        "UCR archive's PLAID (Plug Load Appliance Identification Dataset), bundled with sktime (no "
        "download): current drawn by 11 appliance types (the archive numbers them 0–10), 537 recordings per "
        f"split, from 100 to 1344 samples long (median 300). Recordings are cut or zero-padded to {WINDOW} "
        "samples after normalization; 10 % of them are longer and lose their tail."
    ),
    limits=(
        "Recording length differs by class in PLAID; zero padding lets every model here see it, which a "
        "device streaming fixed windows would not offer.",
    ),
)

build = task_builder(TASK)

if __name__ == "__main__":
    pin_kernels()
    run_command_line(build, "python -m models.plaid", __doc__ or "")
