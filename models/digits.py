"""Task ``digits``: which digit, from an 8 × 8 grey image (scikit-learn's digits), the image modality.

The models read the image as 8 rows (channels) of 8 pixels, scaled from 0–16 to 0–1; a 1D CNN across the
columns with the rows as channels is small and quantizes well. The cloud ensemble also reads the columns as
channels (each fold's member is a pair), a second view of the same image. The edge student starts as wide as
one member (the narrower student it replaced scored below MiniRocket even unpruned) and is pruned to half its
channels (``docs/decisions.md``). Run ``python -m models.digits [--quick]``.
"""

from __future__ import annotations

from models.classification import Architecture, ClassificationTask, TrainingShape, run_command_line, task_builder
from models.datasets import load_digits
from models.kernels import pin_kernels
from models.training import SeriesAugmentation
from protocol.manifest import Scale
from protocol.messages import SensorKind

SHAPE = TrainingShape(
    cloud=Architecture(widths=(64, 128, 128), kernels=(3, 3, 3), pools=(1, 1, 1)),
    student=Architecture(widths=(64, 128, 128), kernels=(3, 3, 3), pools=(1, 1, 1)),
    batch_size=32,
    augmentation=SeriesAugmentation(max_shift=1, noise=0.05, scale=0.1, renormalize=False),
    transposed_members=True,
)

TASK = ClassificationTask(
    name="digits",
    version="1.0.0",
    summary="which digit, from an 8 × 8 grey image (scikit-learn's digits)",
    load=load_digits,
    preprocessing=(Scale(offset=0.0, factor=1.0 / 16.0).model_dump(),),
    manifest_preprocessing=(Scale(offset=0.0, factor=1.0 / 16.0),),
    affine_in_graph=False,
    sensor=SensorKind.GENERIC,
    unit="grey level 0-16",
    sample_rate_hz=None,
    layout="batch, image row, image column",
    full=SHAPE.plan(folds=5, epochs=60),
    quick=SHAPE.plan(folds=2, epochs=8),
    about=(
        "scikit-learn's bundled digits (UCI optical recognition of handwritten digits, 8 × 8 downsampled, "
        "no download). It has no official split; scikit-learn's own example trains on the first half and "
        "tests on the second, and so does this task."
    ),
    limits=(
        "The peers read each image flattened row by row into one series of 64 pixels (MiniRocket needs "
        "series of at least 9 samples); the CNNs read 8 rows of 8.",
        "Digits written by 43 people; the halves share writers, so the test figure is optimistic for new "
        "handwriting or a camera's frames.",
    ),
    peers_flatten=True,
)

build = task_builder(TASK)

if __name__ == "__main__":
    pin_kernels()
    run_command_line(build, "python -m models.digits", __doc__ or "")
