"""Audio (espeak-ng, sox) and camera (OpenCV) modalities."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from firmware_sim.audio import KEYWORDS, SAMPLE_RATE_HZ, SILENCE, KeywordAudio, mix, synthesize
from firmware_sim.camera import CameraScene, write_frame
from protocol import MAX_PAYLOAD_BYTES, TelemetryBatch, decode
from tests.services import missing
from tests.unit.firmware_sim.conftest import scenario, simulate, telemetry


def needs_speech() -> None:
    if shutil.which("espeak-ng") is None:
        missing("espeak-ng (apt-get install espeak-ng)")
    if shutil.which("sox") is None:
        missing("sox (apt-get install sox)")


def test_keywords_are_spoken_and_mixed_at_the_chosen_snr() -> None:
    needs_speech()
    speech = synthesize("stop", "en-us", 160, 50)
    assert 0.2 * SAMPLE_RATE_HZ < len(speech) < 1.2 * SAMPLE_RATE_HZ
    assert np.abs(speech).max() > 0.1
    noise = np.random.default_rng(0).normal(0.0, 1.0, len(speech))
    mixed = mix(speech, noise, snr_db=10.0)
    active = np.abs(speech) > 0.01 * np.abs(speech).max()
    snr = 10 * np.log10(np.mean(speech[active].astype(float) ** 2) / np.mean((mixed - speech)[active] ** 2))
    assert abs(snr - 10.0) < 1.0


def test_a_microphone_streams_labelled_clips_within_the_payload_limit() -> None:
    needs_speech()
    microphone = KeywordAudio(np.random.default_rng(1), silence_share=0.3)
    values = microphone.generate(0, np.zeros(6 * SAMPLE_RATE_HZ))
    assert microphone.labels is not None
    segments = microphone.labels.segments()
    assert [start for start, _ in segments] == [i * SAMPLE_RATE_HZ for i in range(6)]
    assert {label for _, label in segments} <= {*KEYWORDS, SILENCE}
    assert np.abs(values).max() <= 1.0
    # The clips with a word are louder than the ones without.
    loud = [np.abs(values[s : s + SAMPLE_RATE_HZ]).max() for s, label in segments if label != SILENCE]
    assert min(loud) > 0.1


async def test_voice_and_camera_devices_publish_batches_under_the_limit(tmp_path: Path) -> None:
    needs_speech()
    document = scenario(
        duration_s=2.0,
        sites=[{"name": "home", "devices": [{"profile": "voice", "count": 1}, {"profile": "camera", "count": 1}]}],
    )
    fleet, sent = await simulate(document)
    audio = telemetry(sent, "voice-000", "mic")
    frames = telemetry(sent, "camera-000", "frames")
    assert len(audio) == 8 and len(frames) == 4
    assert all(isinstance(m, TelemetryBatch) and len(m.values) == 4000 for m in audio)
    assert all(isinstance(m, TelemetryBatch) and len(m.values) == 32 * 24 for m in frames)
    assert max(len(payload) for _, payload in sent) < MAX_PAYLOAD_BYTES
    assert fleet.label("voice-000", "mic", 16_000) is not None
    assert fleet.label("camera-000", "frames", 768).startswith("objects_")  # type: ignore[union-attr]
    assert decode(sent[-1][1])


def test_camera_frames_show_moving_shapes(tmp_path: Path) -> None:
    camera = CameraScene(np.random.default_rng(2), width=64, height=48, max_objects=3)
    camera.shapes = camera.shapes or [camera._shape()]
    first = camera.frame()
    boxes = camera.boxes()
    for _ in range(5):
        camera.step()
    later = camera.frame()
    assert first.shape == (48, 64) and first.dtype == np.uint8
    _, x0, y0, x1, y1 = boxes[0]
    assert first[y0 : y1 + 1, x0 : x1 + 1].max() > np.median(first) + 40  # the shape stands out
    assert np.abs(first.astype(int) - later.astype(int)).mean() > 1.0
    write_frame(tmp_path / "frame.png", first)
    assert (tmp_path / "frame.png").read_bytes()[:4] == b"\x89PNG"
