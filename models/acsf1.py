"""Task ``acsf1``: which of ten appliance types, from a recording of its power draw (1460 readings).

The models read the z-normalized series; long series are shortened by max-pooling between convolution
blocks. Run ``python -m models.acsf1 [--quick]``.
"""

from __future__ import annotations

from models.classification import Architecture, ClassificationTask, TrainingShape, run_command_line, task_builder
from models.datasets import load_acsf1
from models.kernels import pin_kernels
from models.rocket_recipe import RocketPlan
from models.training import SeriesAugmentation
from protocol.manifest import ZNormalize
from protocol.messages import SensorKind

SHAPE = TrainingShape(
    cloud=Architecture(widths=(32, 64, 128, 128), kernels=(9, 7, 5, 3), pools=(4, 4, 2, 1)),
    student=Architecture(widths=(32, 64, 64, 64), kernels=(9, 7, 5, 3), pools=(4, 4, 2, 1)),
    batch_size=16,
    augmentation=SeriesAugmentation(max_shift=20, noise=0.05, scale=0.0, renormalize=True),
)

TASK = ClassificationTask(
    name="acsf1",
    version="1.0.0",
    summary="which of ten appliance types, from a recording of its power draw (1460 readings)",
    load=load_acsf1,
    preprocessing=(ZNormalize().model_dump(),),
    manifest_preprocessing=(ZNormalize(),),
    affine_in_graph=False,
    sensor=SensorKind.POWER,
    unit="W",
    sample_rate_hz=None,  # the archive does not state it
    layout="batch, sample",
    full=SHAPE.plan(folds=5, epochs=150, rocket=RocketPlan()),
    quick=SHAPE.plan(folds=2, epochs=20, rocket=RocketPlan.quick()),
    about=(
        "UCR archive's ACSF1, bundled with sktime (no download), from the ACS-F1 appliance consumption "
        "signatures database: ten appliance types (the database lists coffee machines, computer stations, "
        "fridges and freezers, Hi-Fi systems, lamps, laptops, microwaves, mobile phones, printers and "
        "televisions; the archive names the classes 0–9 only), ten series per class and split."
    ),
    limits=(
        "One hundred test series: one series is 1 % of the test figure; the training split has ten per class.",
        "The archive's series are already z-normalized, so absolute power levels, which tell appliances "
        "apart, are not available to any method here.",
    ),
)
build = task_builder(TASK)

if __name__ == "__main__":
    pin_kernels()
    run_command_line(build, "python -m models.acsf1", __doc__ or "")
