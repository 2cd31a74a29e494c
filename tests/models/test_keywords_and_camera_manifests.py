"""The keywords and camera tasks ship protocol manifests whose preprocessing is exactly what they trained on."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from models.signals import apply_preprocessing
from models.tasks import COMMITTED
from protocol.manifest import Frame, Grayscale, Mfcc, ModelManifest, Resize, Scale
from protocol.preprocessing import preprocess

VARIANTS = ("cloud_fp32", "edge_fp32", "edge_int8")


def _manifest(task: str, variant: str) -> ModelManifest:
    return ModelManifest.model_validate_json((COMMITTED / f"{task}_{variant}.manifest.json").read_bytes())


@pytest.mark.parametrize("variant", VARIANTS)
def test_keywords_manifests_carry_the_mfcc_the_models_trained_on(variant: str) -> None:
    from models.keywords import PREPROCESSING, TASK

    manifest = _manifest("keywords", variant)
    assert manifest.input.preprocessing == list(PREPROCESSING)
    assert isinstance(manifest.input.preprocessing[1], Mfcc)
    assert manifest.input.window_size == 16_000  # one second of raw audio, not the 49 MFCC frames
    assert manifest.input.sample_rate_hz == 16_000
    assert manifest.input.shape == [None, 10, 49]
    assert manifest.input.unit == TASK.unit
    if variant == "edge_int8":
        assert {export.backend for export in manifest.exports} >= {"openvino"}


def test_training_and_runtime_compute_the_same_keyword_features() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("keyword clips are synthesized by espeak-ng (apt-get install espeak-ng)")
    from models.keywords import TASK
    from models.speech import TEST_VARIANTS, keyword_clips, pcm16

    clips = pcm16(keyword_clips(TEST_VARIANTS, 1, seed=7).clips)
    trained_on = apply_preprocessing(clips, TASK.preprocessing)  # what the build feeds the networks
    manifest = _manifest("keywords", "edge_int8")
    at_runtime = preprocess(clips, manifest.input.preprocessing)  # what the agent and the hub compute
    np.testing.assert_array_equal(trained_on, at_runtime)
    # A card written before the protocol had an MFCC step names three parameters differently.
    legacy = {
        "op": "mfcc",
        "sample_rate": 16000,
        "frame_length": 640,
        "hop": 320,
        "n_fft": 1024,
        "mel_bands": 40,
        "fmin": 20.0,
        "fmax": 4000.0,
        "coefficients": 10,
        "log_floor": 1e-06,
    }
    np.testing.assert_array_equal(apply_preprocessing(clips / 32768.0, [legacy]), at_runtime)


def test_the_committed_keyword_model_hears_a_synthesized_keyword() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("keyword clips are synthesized by espeak-ng (apt-get install espeak-ng)")
    from models.runtimes import load_runner
    from models.speech import LABELS, TEST_VARIANTS, keyword_clips, pcm16

    clips = keyword_clips(TEST_VARIANTS, 2, seed=11)
    manifest = _manifest("keywords", "edge_int8")
    windows = preprocess(pcm16(clips.clips), manifest.input.preprocessing)
    predictions = load_runner(COMMITTED, "keywords_edge_int8", "onnxruntime")(windows).predictions
    assert np.mean(predictions == clips.labels) >= 0.8, [LABELS[p] for p in predictions]


@pytest.mark.parametrize("variant", VARIANTS)
def test_camera_manifests_describe_frames_as_opencv_gives_them(variant: str) -> None:
    from models.camera import PREPROCESSING

    manifest = _manifest("camera", variant)
    steps = manifest.input.preprocessing
    assert steps == list(PREPROCESSING)
    assert [type(step) for step in steps] == [Frame, Grayscale, Resize, Scale]
    frame = steps[0]
    assert isinstance(frame, Frame)
    assert manifest.input.window_size == frame.height * frame.width * frame.channels
    assert manifest.input.shape == [None, 24, 32]
    assert manifest.output.labels == ["objects_0", "objects_1", "objects_2", "objects_3"]


def test_the_camera_task_counts_objects_in_fresh_simulator_frames() -> None:
    pytest.importorskip("cv2")
    from models.camera_frames import render_frames
    from models.runtimes import load_runner

    frames, labels = render_frames(80, seed=99)  # scenes neither the training nor the test split holds
    manifest = _manifest("camera", "edge_int8")
    flat = frames.reshape(len(frames), -1)  # as the agent sends a frame: flat, BGR
    windows = preprocess(flat, manifest.input.preprocessing)
    predictions = load_runner(COMMITTED, "camera_edge_int8", "onnxruntime")(windows).predictions
    recorded = manifest.metrics["test_accuracy"]
    assert np.mean(predictions == labels) >= recorded - 0.1


def test_camera_frames_come_from_the_simulator_and_are_balanced() -> None:
    pytest.importorskip("cv2")
    from models.camera_frames import HEIGHT, LABELS, WIDTH, render_frames

    frames, labels = render_frames(40, seed=3)
    assert frames.shape == (40, HEIGHT, WIDTH, 3)
    assert frames.dtype == np.uint8
    assert np.bincount(labels, minlength=len(LABELS)).tolist() == [10, 10, 10, 10]
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])  # grey scenes, as BGR
    again, _ = render_frames(40, seed=3)
    np.testing.assert_array_equal(frames, again)  # seeded
