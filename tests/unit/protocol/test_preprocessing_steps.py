"""The manifest's preprocessing steps: what each computes, and clear errors for bad parameters or windows."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from protocol.manifest import FitLength, Frame, Grayscale, Mfcc, PreprocessStep, Resample, Resize, Scale
from protocol.preprocessing import PreprocessingError, dct_matrix, mel_filterbank, preprocess

KEYWORD_MFCC = Mfcc(
    sample_rate=16000,
    frame_length=640,
    hop=320,
    n_fft=1024,
    n_mels=40,
    fmin=20.0,
    fmax=4000.0,
    log_offset=1e-6,
    n_mfcc=10,
)


def test_resample_to_a_length_keeps_the_endpoints() -> None:
    out = preprocess([[0.0, 1.0, 2.0, 3.0]], [Resample(length=7)])
    assert out.tolist() == [[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]]
    assert preprocess(np.zeros((2, 3, 10)), [Resample(length=4)]).shape == (2, 3, 4)


def test_resample_between_rates() -> None:
    out = preprocess(np.sin(np.linspace(0, 6, 300))[np.newaxis], [Resample(source_rate_hz=300, target_rate_hz=100)])
    assert out.shape == (1, 100)
    np.testing.assert_allclose(out[0, [0, -1]], [0.0, np.sin(6.0)], atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "needs `length`"),
        ({"source_rate_hz": 8000.0}, "needs `length`"),
        ({"length": 10, "source_rate_hz": 1.0, "target_rate_hz": 2.0}, "not both"),
        ({"length": 1}, "greater than or equal to 2"),
    ],
)
def test_resample_refuses_unclear_targets(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Resample(**fields)


def test_fit_length_pads_and_crops_where_it_says() -> None:
    window = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    assert preprocess(window, [FitLength(length=3)]).tolist() == [[1, 2, 3]]
    assert preprocess(window, [FitLength(length=3, where="start")]).tolist() == [[3, 4, 5]]
    assert preprocess(window, [FitLength(length=3, where="both")]).tolist() == [[2, 3, 4]]
    assert preprocess(window, [FitLength(length=7, pad=-1.0)]).tolist() == [[1, 2, 3, 4, 5, -1, -1]]
    assert preprocess(window, [FitLength(length=7, where="start")]).tolist() == [[0, 0, 1, 2, 3, 4, 5]]
    assert preprocess(window, [FitLength(length=8, where="both")]).tolist() == [[0, 1, 2, 3, 4, 5, 0, 0]]
    assert preprocess(window, [FitLength(length=5)]).tolist() == window.tolist()
    with pytest.raises(ValidationError):
        FitLength(length=0)
    with pytest.raises(ValidationError):
        FitLength.model_validate({"length": 4, "where": "middle"})


def test_mfcc_shape_and_its_parts_against_independent_formulas() -> None:
    scipy_fft = pytest.importorskip("scipy.fft")
    rng = np.random.default_rng(0)
    audio = rng.normal(scale=0.1, size=(3, 16000))
    out = preprocess(audio, [KEYWORD_MFCC])
    assert out.shape == (3, 10, 49)  # 1 + (16000 - 640) // 320 frames

    # Frame 7 of clip 1 by hand: Hann window, power spectrum over n_fft, filterbank, log, DCT-II (ortho).
    frame = audio[1, 7 * 320 : 7 * 320 + 640] * np.hanning(641)[:-1]
    power = np.abs(np.fft.rfft(frame, 1024)) ** 2 / 1024
    bank = mel_filterbank(sample_rate=16000, n_fft=1024, n_mels=40, fmin=20.0, fmax=4000.0)
    expected = scipy_fft.dct(np.log(bank @ power + 1e-6), type=2, norm="ortho")[:10]
    np.testing.assert_allclose(out[1, :, 7], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dct_matrix(40, 40) @ dct_matrix(40, 40).T, np.eye(40), atol=1e-12)


def test_mel_filterbank_peaks_at_one_within_its_band() -> None:
    bank = mel_filterbank(sample_rate=16000, n_fft=1024, n_mels=40, fmin=20.0, fmax=4000.0)
    assert bank.shape == (40, 513)
    assert bank.max() <= 1.0
    assert (bank[:, 4000 * 1024 // 16000 + 1 :] == 0).all()  # nothing above fmax
    assert (bank.max(axis=1) > 0.5).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frame_length": 2048}, "exceeds n_fft"),
        ({"fmax": 9000.0}, "fmax <= sample_rate / 2"),
        ({"fmin": 4000.0}, "fmin < fmax"),
        ({"n_mfcc": 41}, "exceeds n_mels"),
        ({"log_offset": 0.0}, "greater than 0"),
        ({"dct_type": 3}, "dct_type"),
        ({"window": "hamming"}, "window"),
    ],
)
def test_mfcc_refuses_bad_parameters(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Mfcc.model_validate(KEYWORD_MFCC.model_dump() | change)


def test_mfcc_refuses_a_window_shorter_than_a_frame() -> None:
    with pytest.raises(PreprocessingError, match="takes 640 samples; the window has 600"):
        preprocess(np.zeros((1, 600)), [KEYWORD_MFCC])


def test_image_steps_make_a_model_input_from_flat_bgr_frames() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(2, 4, 6, 3)).astype(np.float64)
    steps: list[PreprocessStep] = [
        Frame(height=4, width=6, channels=3),
        Grayscale(),
        Resize(height=2, width=3, interpolation="area"),
        Scale(factor=1 / 255),
    ]
    flat = preprocess(frames.reshape(2, -1), steps)
    shaped = preprocess(frames, steps)  # a frame already shaped passes the `frame` step unchanged
    np.testing.assert_array_equal(flat, shaped)
    grey = frames @ np.array([0.114, 0.587, 0.299])  # BGR order
    blocks = grey.reshape(2, 2, 2, 3, 2).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(flat, blocks, rtol=1e-6)
    rgb = preprocess(frames, [Grayscale(channel_order="rgb")])
    np.testing.assert_allclose(rgb, frames @ np.array([0.299, 0.587, 0.114]), rtol=1e-6)


def test_image_steps_refuse_windows_of_another_shape() -> None:
    with pytest.raises(PreprocessingError, match="takes 72 values"):
        preprocess(np.zeros((1, 70)), [Frame(height=4, width=6)])
    with pytest.raises(PreprocessingError, match=r"grayscale takes images \[..., height, width, 3\]"):
        preprocess(np.zeros((1, 4, 6)), [Grayscale()])
    with pytest.raises(PreprocessingError, match="resize takes images"):
        preprocess(np.zeros((1, 6)), [Resize(height=2, width=3, interpolation="bilinear")])
    with pytest.raises(ValidationError):
        Resize(height=2, width=3)  # type: ignore[call-arg]  # the interpolation must be stated
    with pytest.raises(ValidationError):
        Resize(height=0, width=3, interpolation="area")


@pytest.mark.parametrize(("height", "width"), [(24, 32), (20, 30), (17, 23), (96, 128)])
@pytest.mark.parametrize("interpolation", ["area", "bilinear"])
def test_resize_matches_opencv(height: int, width: int, interpolation: str) -> None:
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(2).uniform(0, 255, (48, 64)).astype(np.float32)
    flag = cv2.INTER_AREA if interpolation == "area" else cv2.INTER_LINEAR
    expected = cv2.resize(image, (width, height), interpolation=flag)
    ours = preprocess(image[np.newaxis], [Resize(height=height, width=width, interpolation=interpolation)])
    np.testing.assert_allclose(ours[0], expected, atol=1e-3)


def test_grayscale_matches_opencv_up_to_its_rounding() -> None:
    cv2 = pytest.importorskip("cv2")
    frame = np.random.default_rng(3).integers(0, 256, (8, 10, 3)).astype(np.uint8)
    ours = preprocess(frame[np.newaxis].astype(np.float64), [Grayscale()])[0]
    assert np.abs(ours - cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)).max() <= 0.5 + 1e-4


def test_steps_round_trip_through_json() -> None:
    adapter: TypeAdapter[list[PreprocessStep]] = TypeAdapter(list[PreprocessStep])
    steps: list[PreprocessStep] = [
        KEYWORD_MFCC,
        Resample(length=10),
        FitLength(length=5, where="both"),
        Frame(height=2, width=2),
        Grayscale(),
        Resize(height=1, width=1, interpolation="bilinear"),
    ]
    assert adapter.validate_json(adapter.dump_json(steps)) == steps
    with pytest.raises(ValidationError):
        adapter.validate_python([{"op": "spectrogram"}])


def test_windows_that_leave_the_float_range_are_refused_not_turned_into_nan() -> None:
    from protocol.manifest import ZNormalize

    with pytest.raises(PreprocessingError, match="znorm"):
        preprocess(np.array([[-1.7e308, 1.7e308, 3.0, 1.0]]), [ZNormalize()])
    with pytest.raises(PreprocessingError, match="float32"):
        preprocess(np.array([[1e300, 2e300]]), [Scale(factor=1.0)])
    assert np.all(np.isfinite(preprocess(np.array([[1e30, -1e30, 0.0, 5.0]]), [ZNormalize()])))
