"""Local sources through the agent: the committed camera and keyword models decide, escalate and are counted."""

from __future__ import annotations

import asyncio
import queue
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.errors import InferenceError, ModelLoadError
from edge_agent.feeds import CameraFeed, MicrophoneFeed, OpenCVCamera, WavFileSource
from edge_agent.feeds.camera import CapturedFrame
from edge_agent.metrics import exposition, health, registry_for
from edge_agent.model import load_model
from edge_agent.pipeline import Pipeline
from edge_agent.settings import AgentSettings, CameraSettings, MicrophoneSettings, PolicySettings
from edge_agent.transport import InMemoryBroker
from protocol import Escalation, InferenceResult, Kind, Topic, decode
from protocol.codec import MAX_PAYLOAD_BYTES
from tests import fakes
from tests.signed_models import copy_model

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "quantized"
CAMERA_MANIFEST = COMMITTED / "camera_edge_int8.manifest.json"
KEYWORDS_MANIFEST = COMMITTED / "keywords_edge_int8.manifest.json"
NOW = 1_800_000_000.0


def scene_video(path: Path, *, still: int, moving: int) -> None:
    """A video of a simulated scene with two objects, still then moving, written with OpenCV."""
    cv2 = pytest.importorskip("cv2")
    from firmware_sim.camera import CameraScene

    scene = CameraScene(np.random.default_rng(21), width=64, height=48, max_objects=3)
    scene.shapes = [scene._shape(), scene._shape()]  # two objects, apart
    scene.shapes[0].x, scene.shapes[0].y, scene.shapes[0].size = 16.0, 20.0, 6.0
    scene.shapes[1].x, scene.shapes[1].y, scene.shapes[1].size = 46.0, 30.0, 5.0
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for index in range(still + moving):
        if index >= still:
            for shape in scene.shapes:
                shape.y = float(np.clip(shape.y + 1.5 * (1 if shape.dy >= 0 else -1), shape.size, 48 - shape.size))
        writer.write(cv2.cvtColor(scene.frame(), cv2.COLOR_GRAY2BGR))
    writer.release()


async def test_camera_frames_from_a_video_flow_through_the_agent(settings: AgentSettings, tmp_path: Path) -> None:
    video = tmp_path / "scene.avi"
    scene_video(video, still=20, moving=20)
    model = load_model(CAMERA_MANIFEST)
    camera = CameraSettings(source=str(video), fps=None, gate_threshold=0.005, cooldown_s=0.3)
    # Escalate every frame the model decides, so that the escalation path is exercised too.
    settings = settings.model_copy(
        update={"camera": camera, "policy": PolicySettings(min_confidence=1.0, episode_reminder_s=0.0)}
    )
    feed = CameraFeed(camera, model, OpenCVCamera(str(video)), site=settings.site, clock=lambda: NOW)
    broker = InMemoryBroker()
    async with EdgeAgent(
        settings, model=fakes.fake_model(), connect=broker.connector("agent"), clock=lambda: NOW, feeds=[feed]
    ) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        async with asyncio.timeout(10):
            while feed.counts["read"] < 40 or agent.queued:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        metrics = exposition(registry_for(agent)).decode()
        healthy, document = health(agent)
    counts = feed.counts
    assert counts["read"] == 40
    assert counts["inferred"] + counts["gated_still"] + counts["gated_cooldown"] == 40
    assert counts["gated_still"] >= 19  # the still half: only its first frame is inferred
    assert 2 <= counts["inferred"] <= 9
    results = [decode(m.payload) for m in broker.published if Topic.parse(m.topic).kind is Kind.INFERENCE]
    assert len(results) == counts["inferred"] == agent.stats.windows
    assert all(isinstance(result, InferenceResult) for result in results)
    assert {Topic.parse(m.topic).device for m in broker.published} == {"camera"}
    labels = [result.outcome.label for result in results if isinstance(result, InferenceResult)]
    assert set(labels) <= {f"objects_{count}" for count in range(4)}
    escalations = [decode(m.payload) for m in broker.published if Topic.parse(m.topic).kind is Kind.ESCALATION]
    assert len(escalations) == counts["inferred"]
    assert max(len(m.payload) for m in broker.published) < MAX_PAYLOAD_BYTES
    for escalation, label in zip(escalations, labels, strict=True):
        assert isinstance(escalation, Escalation)
        assert len(escalation.window.values) == model.window_size == 48 * 64 * 3
        # The escalated window is the frame as the model read it: the hub's judgement starts from the same input.
        assert model.infer([escalation.window.values])[0].label == escalation.edge.label == label
    assert f'edgefleet_agent_feed_items_total{{outcome="inferred",source="camera/camera"}} {counts["inferred"]}.0' in (
        metrics
    )
    assert document["feeds"] == {"camera/camera": {"kind": "camera", "model": "camera_edge_int8", **counts}}
    assert healthy


def keyword_recording(path: Path, word: str) -> tuple[int, int]:
    """Three seconds of room noise with ``word`` spoken (espeak-ng, sox) in the middle, as a 16-bit WAV."""
    from firmware_sim.audio import SAMPLE_RATE_HZ, synthesize

    rng = np.random.default_rng(3)
    audio = rng.normal(0.0, 0.003, 3 * SAMPLE_RATE_HZ)
    speech = synthesize(word, "en-us", 160, 50)
    start = int(1.3 * SAMPLE_RATE_HZ)
    audio[start : start + len(speech)] += 0.6 * speech / np.abs(speech).max()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes(np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes())
    return start, start + len(speech)


@pytest.mark.parametrize("word", ["yes", "stop"])
def test_a_keyword_in_a_wav_file_is_heard_through_the_pipeline(
    settings: AgentSettings, tmp_path: Path, word: str
) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("the recording is synthesized by espeak-ng (apt-get install espeak-ng)")
    path = tmp_path / "room.wav"
    begin, end = keyword_recording(path, word)
    model = load_model(KEYWORDS_MANIFEST)
    microphone = MicrophoneSettings(file=path, hop_s=0.25, block_s=0.1, min_rms_dbfs=-45.0)
    feed = MicrophoneFeed(microphone, model, WavFileSource(path, block=1600), site=settings.site, clock=lambda: NOW)
    # Escalate every window: a second of 16-bit audio must fit in one message.
    policy = PolicySettings(min_confidence=1.0, episode_reminder_s=0.0, max_escalations_per_minute=1000)
    pipeline = Pipeline(settings.model_copy(update={"policy": policy}), fakes.fake_model())
    decided: dict[int, str] = {}
    escalated = 0
    while (windows := feed.read()) is not None:
        for envelope in pipeline.infer_local(windows, feed.model, NOW):
            message = decode(envelope.payload)  # refuses payloads above MAX_PAYLOAD_BYTES
            if isinstance(message, InferenceResult):
                decided[message.window_start_seq] = message.outcome.label
            elif isinstance(message, Escalation):
                escalated += 1
                assert len(message.window.values) == 16_000
                assert message.window.unit == "PCM16"
    counts = feed.counts
    assert counts["samples"] == 48_000
    assert counts["windows"] == 1 + (48_000 - 16_000) // 4000
    assert counts["gated_quiet"] >= 1  # windows of room noise alone (about -50 dBFS)
    assert counts["inferred"] == len(decided) == pipeline.stats.windows
    holding = [start for start in decided if start <= begin and end <= start + 16_000]
    assert holding, "some window holds the whole word"
    assert all(decided[start] == word for start in holding), decided
    assert pipeline.stats.decisions[word] >= len(holding)
    assert escalated == len(decided)


class QueuedFrames:
    """A camera the test feeds frame by frame; each frame is new noise, so the motion gate passes it."""

    def __init__(self) -> None:
        self.frames: queue.Queue[CapturedFrame | None] = queue.Queue()
        self.rng = np.random.default_rng(8)
        self.clock = 0.0

    def push(self, count: int) -> None:
        for _ in range(count):
            self.clock += 1.0  # past any cool-down
            self.frames.put(CapturedFrame(self.rng.integers(0, 256, (48, 64), dtype=np.uint8), self.clock))

    def read(self) -> CapturedFrame | None:
        return self.frames.get(timeout=10)

    def close(self) -> None:
        self.frames.put(None)


async def test_a_local_sources_model_is_hot_swapped_and_rolled_back_on_its_own(
    settings: AgentSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = QueuedFrames()
    feed = CameraFeed(CameraSettings(cooldown_s=0.0), load_model(CAMERA_MANIFEST), source, site=settings.site)
    sensor_model = fakes.fake_model()
    settings = settings.model_copy(update={"max_failure_rate": 0.05})
    async with EdgeAgent(settings, model=sensor_model, connect=InMemoryBroker().connector("a"), feeds=[feed]) as agent:

        async def inferred(count: int) -> None:
            async with asyncio.timeout(10):
                while feed.counts["inferred"] < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

        async def inferred_by(version: str, count: int) -> None:
            # The reader thread counts a frame as inferred when it hands it over; the loop infers it just after.
            async with asyncio.timeout(10):
                while agent.stats.windows_by_model[("camera_edge_int8", version)] < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

        source.push(3)
        await inferred_by("1.0.0", 3)
        # The camera's next version goes to the camera's place; the sensor model stays.
        await agent.swap_model(copy_model(tmp_path / "v2", version="2.0.0", name="camera_edge_int8"))
        assert feed.model.manifest.version == "2.0.0"
        assert agent.model is sensor_model
        source.push(3)
        await inferred_by("2.0.0", 3)
        assert feed.counts["inferred"] == 6
        assert agent.stats.windows_by_model[("camera_edge_int8", "2.0.0")] == 3

        # A model for the camera's task that reads another input is refused: the camera opened for the old one.
        with pytest.raises(ModelLoadError, match="reads another input"):
            await agent.swap_model(
                copy_model(
                    tmp_path / "v3",
                    version="3.0.0",
                    name="camera_edge_int8",
                    input=feed.model.manifest.input.model_copy(update={"unit": "lux"}),
                )
            )
        assert feed.model.manifest.version == "2.0.0"

        # Version 4 fails at inference: it is rolled back to the version before it, the camera keeps going.
        candidate = await agent.swap_model(copy_model(tmp_path / "v4", version="4.0.0", name="camera_edge_int8"))

        def broken(batch: object) -> object:
            raise InferenceError("the accelerator stopped answering")

        monkeypatch.setattr(candidate.backend, "run", broken)
        source.push(12)
        async with asyncio.timeout(10):
            while feed.model is candidate:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert feed.model.manifest.version == "2.0.0"
        assert agent.stats.failures_by_model[("camera_edge_int8", "4.0.0")] >= 10
        assert agent.feed_keepers[feed.name].rollbacks == 1
        failures = feed.counts["inferred"]
        source.push(2)
        await inferred(failures + 2)
        assert agent.model is sensor_model
