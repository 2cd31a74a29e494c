"""Task ``camera``: how many objects (0–3) a camera frame shows, the image modality on the simulator's camera.

Frames come from ``firmware_sim``'s camera modality (:mod:`models.camera_frames`): 64 × 48 BGR frames as
OpenCV delivers them. The manifest's steps turn a frame into the model's input: grey (BT.601), shrunk to
32 × 24 by area averaging, scaled to [0, 1]; the CNNs read the 24 rows as channels of 32 columns, like the
``digits`` task. Run ``python -m models.camera [--quick]``.
"""

from __future__ import annotations

from models.camera_frames import HEIGHT, TEST_FRAMES, TRAIN_FRAMES, WIDTH, load_camera
from models.classification import Architecture, ClassificationTask, TrainingShape, run_command_line, task_builder
from models.kernels import pin_kernels
from models.training import SeriesAugmentation
from protocol.manifest import Frame, Grayscale, PreprocessStep, Resize, Scale
from protocol.messages import SensorKind

MODEL_HEIGHT, MODEL_WIDTH = 24, 32
PREPROCESSING: tuple[PreprocessStep, ...] = (
    Frame(height=HEIGHT, width=WIDTH, channels=3),
    Grayscale(channel_order="bgr", weights=(0.299, 0.587, 0.114)),
    Resize(height=MODEL_HEIGHT, width=MODEL_WIDTH, interpolation="area"),
    Scale(offset=0.0, factor=1.0 / 255.0),
)
# Shifts along the columns and sensor noise; no amplitude scaling (the background's brightness is a cue).
AUGMENTATION = SeriesAugmentation(max_shift=2, noise=0.02, scale=0.0, renormalize=False)


SHAPE = TrainingShape(
    cloud=Architecture(widths=(64, 128, 128), kernels=(5, 3, 3), pools=(1, 1, 1)),
    student=Architecture(widths=(32, 64, 64), kernels=(5, 3, 3), pools=(1, 1, 1)),
    batch_size=64,
    augmentation=AUGMENTATION,
    keep_ratio=0.75,
    transposed_members=True,
    distil_from_rows=True,
)


TASK = ClassificationTask(
    name="camera",
    version="1.0.0",
    summary="how many objects (none to three) a camera frame of the simulator's scene shows",
    load=load_camera,
    preprocessing=tuple(step.model_dump() for step in PREPROCESSING),
    manifest_preprocessing=PREPROCESSING,
    affine_in_graph=True,
    sensor=SensorKind.GENERIC,
    unit="BGR 0-255",
    sample_rate_hz=None,
    layout="batch, image row, image column",
    raw_window_size=HEIGHT * WIDTH * 3,
    full=SHAPE.plan(folds=3, epochs=40),
    quick=SHAPE.plan(folds=2, epochs=6),
    about=(
        "Rendered offline by `firmware_sim/camera.py` (OpenCV drawing): circles and boxes of random size and "
        f"shade drifting over a lit gradient with sensor noise, {WIDTH} × {HEIGHT} pixels. Every frame is from "
        "its own scene (seeded), moved on 0–29 steps; frames whose objects touch are drawn again, and each "
        f"count gets a quarter of the frames: {TRAIN_FRAMES} training frames (seed 1) and {TEST_FRAMES} test "
        "frames (seed 2, other scenes). A raw window is one frame, flat, as OpenCV delivers it (BGR, row by "
        "row); the manifest's `frame`, `grayscale`, `resize` and `scale` steps make the model's input."
    ),
    limits=(
        "Synthetic scenes: flat shapes on a smooth background, no occlusion (touching objects are excluded), "
        "no lighting changes. The figure says the image path works end to end, not how the model fares on "
        "a real camera.",
        "The peers read the same 24 × 32 input as the CNNs, rows as 24 channels of 32 samples (1-NN DTW on "
        "frames flattened to 768 samples would take hours here).",
        "LiteRT: the `.tflite` is built only where `.venv-litert` exists (see Backends below).",
    ),
)


build = task_builder(TASK)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    run_command_line(build, "python -m models.camera", __doc__ or "", argv)


if __name__ == "__main__":
    pin_kernels()
    main()
