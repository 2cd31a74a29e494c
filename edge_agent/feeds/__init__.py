"""Local sources on the device: a camera (OpenCV, motion-gated) and a microphone (sounddevice).

Each feed reads its source (blocking; the agent runs it in a thread of its own), decides what is worth
inferring, and hands :class:`~edge_agent.windowing.ReadyWindow` objects to the pipeline, which infers them
with the feed's own model and decides, escalates and counts them as it does sensor windows. OpenCV and
sounddevice are optional extras (``edge-camera``, ``edge-audio``), imported only when a source opens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from edge_agent.feeds.camera import CameraFeed, CapturedFrame, FrameSource, OpenCVCamera
from edge_agent.feeds.gate import GateDecision, GateResult, MotionGate
from edge_agent.feeds.microphone import (
    AudioSource,
    MicrophoneFeed,
    SoundDeviceMicrophone,
    WavFileSource,
    block_samples,
    model_sample_rate,
)
from edge_agent.model import LoadedModel, load_model
from edge_agent.settings import AgentSettings
from edge_agent.windowing import ReadyWindow, StreamKey
from protocol.ed25519 import PublicKey

__all__ = [
    "AudioSource",
    "CameraFeed",
    "CapturedFrame",
    "FrameSource",
    "GateDecision",
    "GateResult",
    "LocalFeed",
    "MicrophoneFeed",
    "MotionGate",
    "OpenCVCamera",
    "SoundDeviceMicrophone",
    "WavFileSource",
    "open_feeds",
]


class LocalFeed(Protocol):
    """What the agent runs for a local source."""

    kind: str
    key: StreamKey
    """The site, device id and stream its windows are published under."""
    name: str
    """``<device_id>/<stream>``: the source in metrics and logs."""
    model: LoadedModel

    counts: Counter[str]
    """What the feed read, gated and inferred, by outcome."""

    def read(self) -> list[ReadyWindow] | None:
        """Read from the source (blocking); windows to infer, or ``None`` once the source has ended."""
        ...

    def close(self) -> None: ...


def open_feeds(settings: AgentSettings, *, trusted_keys: Sequence[PublicKey] = ()) -> list[LocalFeed]:
    """Load each configured source's model and open the source; raises ModelLoadError or FeedError."""
    feeds: list[LocalFeed] = []

    def load(manifest: Path) -> LoadedModel:
        return load_model(manifest, backend=settings.backend, threads=settings.threads, trusted_keys=trusted_keys)

    try:
        if settings.camera is not None:
            camera = settings.camera
            model = load(camera.model_manifest)
            feeds.append(CameraFeed(camera, model, OpenCVCamera(camera.source), site=settings.site))
        if settings.microphone is not None:
            microphone = settings.microphone
            model = load(microphone.model_manifest)
            rate = model_sample_rate(model)
            block = block_samples(microphone, rate)
            source: AudioSource = (
                WavFileSource(microphone.file, block=block)
                if microphone.file is not None
                else SoundDeviceMicrophone(microphone.device, sample_rate=rate, block=block)
            )
            feeds.append(MicrophoneFeed(microphone, model, source, site=settings.site))
    except BaseException:
        for feed in feeds:
            feed.close()
        raise
    return feeds
