"""Local sources: the motion gate, the camera read from a video file, the microphone read from a WAV file."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import FeedError, ModelLoadError
from edge_agent.feeds import CameraFeed, GateDecision, MicrophoneFeed, MotionGate, OpenCVCamera, WavFileSource
from edge_agent.feeds.camera import CapturedFrame, fit_frame
from edge_agent.feeds.microphone import rms_dbfs
from edge_agent.model import LoadedModel
from edge_agent.settings import CameraSettings, MicrophoneSettings
from protocol.manifest import Frame
from tests import fakes

SIZE = (48, 64)


def still_and_moving(frames: int = 30) -> list[np.ndarray]:
    """``frames`` of a still scene (fresh sensor noise on each), then ``frames`` of its shapes moving."""
    from firmware_sim.camera import CameraScene

    scene = CameraScene(np.random.default_rng(4), width=SIZE[1], height=SIZE[0], max_objects=3)
    while len(scene.shapes) < 2:
        scene.shapes.append(scene._shape())
    scene.rng = np.random.default_rng(5)  # no shape enters or leaves below: rng.random() < 0.05 is rare enough
    still = [scene.frame() for _ in range(frames)]
    moving = []
    for _ in range(frames):
        for shape in scene.shapes:  # move without the scene's random entries and exits
            shape.x = float(np.clip(shape.x + 2.0, shape.size, SIZE[1] - shape.size))
            shape.dx = 0.0
        moving.append(scene.frame())
    return still + moving


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (SIZE[1], SIZE[0]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def test_the_gate_infers_motion_and_holds_still_scenes_and_cooldowns() -> None:
    gate = MotionGate(threshold=0.02, cooldown_s=1.0, width=8, height=6)
    still = np.full((48, 64), 80, dtype=np.uint8)
    assert gate.offer(still, 0.0).decision is GateDecision.INFER  # the first frame
    noisy = np.clip(still + np.random.default_rng(0).normal(0, 5, still.shape), 0, 255).astype(np.uint8)
    assert gate.offer(noisy, 2.0).decision is GateDecision.STILL  # noise alone is not motion
    moved = still.copy()
    moved[:24, :32] = 220  # a quarter of the scene changes
    result = gate.offer(moved, 2.5)
    assert result.decision is GateDecision.INFER
    assert result.change == pytest.approx(0.25)
    assert gate.offer(still, 3.0).decision is GateDecision.COOLDOWN  # changed back, but too soon
    assert gate.offer(still, 3.6).decision is GateDecision.INFER


def test_the_gate_refreshes_a_still_scene_when_asked() -> None:
    gate = MotionGate(threshold=0.5, cooldown_s=0.0, refresh_s=10.0)
    frame = np.zeros((24, 32, 3), dtype=np.uint8)
    decisions = [gate.offer(frame, float(t)).decision for t in range(0, 25, 5)]
    infer, still = GateDecision.INFER, GateDecision.STILL
    assert decisions == [infer, still, infer, still, infer]


def test_the_gate_refuses_bad_parameters_and_frames() -> None:
    with pytest.raises(ValueError, match="share of pixels"):
        MotionGate(threshold=2.0, cooldown_s=0.0)
    with pytest.raises(ValueError, match="cool-down"):
        MotionGate(threshold=0.1, cooldown_s=-1.0)
    with pytest.raises(ValueError, match="a frame is"):
        MotionGate(threshold=0.1, cooldown_s=0.0).offer(np.zeros((2, 2, 2, 2)), 0.0)


def test_frames_are_fitted_to_the_models_geometry() -> None:
    frame = Frame(height=4, width=6, channels=3)
    grey = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)
    fitted = fit_frame(grey, frame)
    assert fitted.shape == (4, 6, 3)
    np.testing.assert_allclose(fitted[..., 0], grey.reshape(4, 2, 6, 2).mean(axis=(1, 3)))
    with pytest.raises(FeedError, match="gives 4 channels"):
        fit_frame(np.zeros((4, 6, 4)), frame)


def camera_model() -> LoadedModel:
    """The fake model, given a camera model's frame step (fakes only read what they need)."""
    model = fakes.fake_model()
    spec = model.manifest.input.model_copy(update={"preprocessing": [Frame(height=SIZE[0], width=SIZE[1])]})
    return LoadedModel(manifest=model.manifest.model_copy(update={"input": spec}), backend=model.backend)


def test_a_camera_read_from_a_video_file_infers_only_on_motion(tmp_path: Path) -> None:
    video = tmp_path / "scene.avi"
    write_video(video, still_and_moving(), fps=10.0)
    settings = CameraSettings(source=str(video), fps=None, gate_threshold=0.005, cooldown_s=0.25)
    feed = CameraFeed(settings, camera_model(), OpenCVCamera(str(video)), site="plant-1")
    inferred: list[int] = []
    while (windows := feed.read()) is not None:
        assert len(windows) <= 1
        for window in windows:
            assert len(window.values) == SIZE[0] * SIZE[1] * 3
            inferred.append(window.start_seq)
    feed.close()
    counts = feed.counts
    assert counts["read"] == 60
    assert counts["read"] == counts["inferred"] + counts["gated_still"] + counts["gated_cooldown"]
    # The still half is inferred once (its first frame); the moving half every third frame at most
    # (0.25 s of cool-down at 10 frames per second), and at least every few frames.
    assert inferred[0] == 0
    assert all(index >= 30 for index in inferred[1:])
    assert counts["gated_still"] >= 29
    assert 5 <= len(inferred) - 1 <= 10
    assert counts["gated_cooldown"] >= 10


def test_the_camera_paces_reads_by_fps(tmp_path: Path) -> None:
    video = tmp_path / "scene.avi"
    write_video(video, still_and_moving(10), fps=10.0)
    settings = CameraSettings(source=str(video), fps=2.0, gate_threshold=0.0, cooldown_s=0.0)
    feed = CameraFeed(settings, camera_model(), OpenCVCamera(str(video)), site="plant-1")
    while feed.read() is not None:
        pass
    feed.close()
    assert feed.counts["read"] == 20
    assert feed.counts["inferred"] == 4  # frames at 0, 0.5, 1.0 and 1.5 s
    assert feed.counts["skipped_pace"] == 16


def test_a_camera_source_that_does_not_open_says_so(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    with pytest.raises(FeedError, match="cannot open the camera source"):
        OpenCVCamera(str(tmp_path / "missing.avi"))


def test_a_camera_model_needs_a_frame_step() -> None:
    class Blank:
        def read(self) -> CapturedFrame | None:
            return None

        def close(self) -> None:
            return None

    with pytest.raises(ModelLoadError, match="no 'frame' step"):
        CameraFeed(CameraSettings(), fakes.fake_model(), Blank(), site="plant-1")


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())


def microphone_model(window: int = 1600, rate: float = 16_000.0) -> LoadedModel:
    model = fakes.fake_model()
    spec = model.manifest.input.model_copy(update={"window_size": window, "hop": window, "sample_rate_hz": rate})
    return LoadedModel(manifest=model.manifest.model_copy(update={"input": spec}), backend=model.backend)


def test_a_microphone_read_from_a_wav_file_windows_with_a_hop_and_skips_quiet_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 3, 8000)  # about -80 dBFS
    tone = 8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16_000)  # about -15 dBFS
    path = tmp_path / "room.wav"
    write_wav(path, np.round(np.concatenate([quiet, tone])))
    settings = MicrophoneSettings(file=path, hop_s=0.05, block_s=0.03, min_rms_dbfs=-40.0)
    feed = MicrophoneFeed(settings, microphone_model(), WavFileSource(path, block=480), site="plant-1")
    starts: list[int] = []
    while (windows := feed.read()) is not None:
        for window in windows:
            assert len(window.values) == 1600
            assert rms_dbfs(window.values) >= -40.0
            starts.append(window.start_seq)
    feed.close()
    counts = feed.counts
    assert counts["samples"] == 16_000
    assert counts["blocks"] == 34  # 33 blocks of 480 samples and one of 160
    assert counts["windows"] == 1 + (16_000 - 1600) // 800
    assert counts["windows"] == counts["inferred"] + counts["gated_quiet"]
    # Windows every 800 samples; those that hold any of the tone (from sample 8000 on) are loud enough.
    assert starts == list(range(8000 - 800, 16_000 - 1600 + 1, 800))
    assert counts["gated_quiet"] == 9


def test_a_wav_file_of_another_rate_or_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "low.wav"
    write_wav(path, np.zeros(800), rate=8000)
    with pytest.raises(FeedError, match="gives 8000 Hz; model fake_edge takes 16000 Hz"):
        MicrophoneFeed(MicrophoneSettings(file=path), microphone_model(), WavFileSource(path, block=80), site="s")
    stereo = tmp_path / "stereo.wav"
    write_wav(stereo, np.zeros(1600), channels=2)
    with pytest.raises(FeedError, match="2 channel"):
        WavFileSource(stereo, block=80)
    with pytest.raises(FeedError, match="cannot read WAV file"):
        WavFileSource(tmp_path / "missing.wav", block=80)


def test_missing_extras_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without(name: str, *args: object, **kwargs: object) -> object:
        if name in {"cv2", "sounddevice"}:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", without)
    from edge_agent.feeds.microphone import SoundDeviceMicrophone

    with pytest.raises(FeedError, match="'edge-camera' extra"):
        OpenCVCamera(0)
    with pytest.raises(FeedError, match="'edge-audio' extra"):
        SoundDeviceMicrophone(None, sample_rate=16_000, block=1600)


def test_the_example_configs_camera_and_microphone_tables_are_valid(tmp_path: Path) -> None:
    from edge_agent.settings import AgentSettings
    from edgefleet.config import load_settings

    example = Path(__file__).resolve().parents[3] / "docs" / "edgefleet.example.toml"
    lines, inside = [], False
    for line in example.read_text().splitlines():
        if line.startswith(("# [agent.camera]", "# [agent.microphone]")):
            inside = True
        elif not line.startswith("# "):
            inside = False
        lines.append(line.removeprefix("# ").split("  #")[0] if inside else line)
    config = tmp_path / "edgefleet.toml"
    config.write_text("\n".join(lines))
    settings = load_settings(AgentSettings, "agent", config)
    assert settings.camera is not None and settings.microphone is not None
    assert settings.camera.source == 0
    assert settings.camera.refresh_s == 60.0
    assert settings.microphone.file == Path("recordings/door.wav")
    assert settings.microphone.model_manifest.name == "keywords_edge_int8.manifest.json"


def test_a_microphone_that_does_not_exist_says_so() -> None:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: PortAudio (libportaudio2) is missing
        pytest.skip(f"sounddevice cannot load: {exc}")
    from edge_agent.feeds.microphone import SoundDeviceMicrophone

    with pytest.raises(FeedError, match="cannot open the microphone 'no-such-input-device'"):
        SoundDeviceMicrophone("no-such-input-device", sample_rate=16_000, block=1600)


async def test_a_failing_source_stops_itself_not_the_agent(tmp_path: Path) -> None:
    import asyncio

    from edge_agent.agent import EdgeAgent
    from edge_agent.settings import AgentSettings
    from edge_agent.transport import InMemoryBroker

    class Broken:
        closed = False

        def read(self) -> CapturedFrame | None:
            raise RuntimeError("the camera fell off")

        def close(self) -> None:
            Broken.closed = True

    settings = AgentSettings(site="plant-1", outbox_path=tmp_path / "outbox.db")
    feed = CameraFeed(CameraSettings(), camera_model(), Broken(), site="plant-1")
    broker = InMemoryBroker()
    async with EdgeAgent(settings, model=fakes.fake_model(), connect=broker.connector("a"), feeds=[feed]) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        async with asyncio.timeout(2):
            while not Broken.closed:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert agent.connected.is_set()
    assert agent.stats.feeds == {"camera/camera": feed.counts}


def test_verdicts_for_a_local_source_reach_an_agent_serving_listed_devices(tmp_path: Path) -> None:
    from edge_agent.agent import EdgeAgent
    from edge_agent.settings import AgentSettings
    from edge_agent.transport import InMemoryBroker

    settings = AgentSettings(site="plant-1", devices=["meter-001"], outbox_path=tmp_path / "outbox.db")

    class Blank:
        def read(self) -> CapturedFrame | None:
            return None

        def close(self) -> None:
            return None

    feed = CameraFeed(CameraSettings(device_id="door-cam"), camera_model(), Blank(), site="plant-1")
    agent = EdgeAgent(settings, model=fakes.fake_model(), connect=InMemoryBroker().connector("a"), feeds=[feed])
    try:
        assert agent.uplink_filters() == [
            "edgefleet/plant-1/meter-001/verdict",
            "edgefleet/plant-1/meter-001/command",
            "edgefleet/plant-1/door-cam/verdict",
            "edgefleet/plant-1/door-cam/command",
        ]
    finally:
        agent.outbox.close()


def test_pacing_at_the_videos_own_rate_reads_every_frame(tmp_path: Path) -> None:
    video = tmp_path / "scene.avi"
    write_video(video, still_and_moving(10), fps=10.0)
    settings = CameraSettings(source=str(video), fps=10.0, gate_threshold=0.0, cooldown_s=0.0)
    feed = CameraFeed(settings, camera_model(), OpenCVCamera(str(video)), site="plant-1")
    while feed.read() is not None:
        pass
    feed.close()
    assert (feed.counts["read"], feed.counts["inferred"], feed.counts["skipped_pace"]) == (20, 20, 0)
