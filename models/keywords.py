"""Task ``keywords``: which of ten spoken keywords (or silence), from one second of audio in noise.

The audio modality. Clips are synthesized offline by espeak-ng and mixed with noise (:mod:`models.speech`);
the models read 10 MFCCs × 49 frames (40 ms frames every 20 ms), the feature front end of MLPerf Tiny's
keyword-spotting benchmark, with a fixed per-coefficient normalization as the graph's first step. The MFCC
is the protocol's step (:class:`protocol.manifest.Mfcc`, computed by :mod:`protocol.preprocessing`), so
training and every runtime compute the same features, and the manifests carry it.
Run ``python -m models.keywords [--quick]``.
"""

from __future__ import annotations

from models.classification import Architecture, ClassificationTask, TrainingShape, run_command_line, task_builder
from models.datasets import KEYWORDS_TEST_PER_LABEL, KEYWORDS_TRAIN_PER_LABEL
from models.kernels import pin_kernels
from models.speech import ACCENTS, KEYWORDS, PCM16_FULL_SCALE, TEST_VARIANTS, TRAIN_VARIANTS, load_keywords_pcm16
from models.training import SeriesAugmentation
from protocol.manifest import Mfcc, PreprocessStep, Scale
from protocol.messages import SensorKind

# The front end of MLPerf Tiny's keyword-spotting benchmark: 10 MFCCs of 40 ms frames every 20 ms.
MFCC = Mfcc(
    sample_rate=16000,
    frame_length=640,
    hop=320,
    n_fft=1024,
    window="hann_periodic",
    spectrum_norm="n_fft",
    mel_scale="htk",
    n_mels=40,
    fmin=20.0,
    fmax=4000.0,
    log="natural",
    log_offset=1e-6,
    dct_type=2,
    dct_norm="ortho",
    n_mfcc=10,
)
# A microphone delivers 16-bit PCM: scaled to [-1, 1] first.
PREPROCESSING: tuple[PreprocessStep, ...] = (Scale(offset=0.0, factor=1.0 / PCM16_FULL_SCALE), MFCC)
AUGMENTATION = SeriesAugmentation(max_shift=3, noise=0.05, scale=0.0, renormalize=False)


SHAPE = TrainingShape(
    cloud=Architecture(widths=(64, 128, 128), kernels=(5, 3, 3), pools=(2, 1, 1)),
    student=Architecture(widths=(32, 64, 64), kernels=(5, 3, 3), pools=(2, 1, 1)),
    batch_size=64,
    augmentation=AUGMENTATION,
)


TASK = ClassificationTask(
    name="keywords",
    version="1.0.0",
    summary=f"which of ten spoken keywords ({', '.join(KEYWORDS)}) or silence, from one second of audio in noise",
    load=load_keywords_pcm16,
    preprocessing=tuple(step.model_dump() for step in PREPROCESSING),
    manifest_preprocessing=PREPROCESSING,
    affine_in_graph=True,
    sensor=SensorKind.SOUND_LEVEL,
    unit="PCM16",
    sample_rate_hz=16000.0,
    layout="batch, MFCC coefficient, frame",
    raw_window_size=16000,
    full=SHAPE.plan(folds=5, epochs=40),
    quick=SHAPE.plan(folds=2, epochs=5),
    about=(
        "Synthesized at build time, offline, by espeak-ng (Debian's package) and mixed with seeded white and "
        f"brown noise at 5–20 dB SNR: {KEYWORDS_TRAIN_PER_LABEL} training and {KEYWORDS_TEST_PER_LABEL} test "
        f"clips per label. Voices: the accents {', '.join(ACCENTS)}, each with espeak-ng's voice variants "
        f"{', '.join(TRAIN_VARIANTS)} for training and {', '.join(TEST_VARIANTS)} for testing (the test "
        "speakers are unheard), random speed (120–220 words per minute) and pitch. A raw window is one second "
        "of 16 kHz mono audio as 16-bit PCM sample values, as a microphone or a WAV file delivers it (the clips "
        "are rounded and clipped to 16 bits)."
    ),
    limits=(
        "Synthetic speech: espeak-ng's formant voices are far more alike than people are, and the noise is "
        "synthetic. The figure says the pipeline works end to end, not how the model fares on real speech.",
    ),
)


build = task_builder(TASK)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    run_command_line(build, "python -m models.keywords", __doc__ or "", argv)


if __name__ == "__main__":
    pin_kernels()
    main()
