"""Benchmark of the agent's local sources, gated against ungated, measured side by side in one run.

    python bench/feeds.py [--rounds 5] [--frames 300] [--seconds 30]

Camera: a video of the simulator's scene (still stretches and moving stretches, 10 frames per second),
written with OpenCV, read through :class:`edge_agent.feeds.CameraFeed` and inferred by the committed
``camera_edge_int8`` model through the pipeline, once with motion gating (the default settings' threshold,
0.3 s of cool-down) and once with every frame inferred. Microphone: a WAV file of the simulator's keywords
in room noise through :class:`edge_agent.feeds.MicrophoneFeed` and the ``keywords_edge_int8`` model, with
and without the energy gate. The variants alternate within each round, so machine load falls on both
alike; figures are medians over rounds: wall time per second of media, inferences, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.feeds import CameraFeed, MicrophoneFeed, OpenCVCamera, WavFileSource  # noqa: E402
from edge_agent.model import LoadedModel, load_model  # noqa: E402
from edge_agent.pipeline import Pipeline  # noqa: E402
from edge_agent.settings import AgentSettings, CameraSettings, MicrophoneSettings  # noqa: E402

COMMITTED = REPO / "models" / "quantized"
FPS = 10.0


def write_scene_video(path: Path, frames: int) -> None:
    """Alternating stretches of 5 s: the scene still, then its objects moving."""
    import cv2

    from firmware_sim.camera import CameraScene

    scene = CameraScene(np.random.default_rng(0), width=64, height=48, max_objects=3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (64, 48))
    for index in range(frames):
        if (index // 50) % 2 == 1:
            scene.step()
        writer.write(cv2.cvtColor(scene.frame(), cv2.COLOR_GRAY2BGR))
    writer.release()


def write_keyword_audio(path: Path, seconds: int) -> None:
    from firmware_sim.audio import SAMPLE_RATE_HZ, KeywordAudio

    audio = KeywordAudio(np.random.default_rng(0), silence_share=0.5, noise_level=0.002)  # a quiet room
    samples = audio.generate(0, np.arange(seconds * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes(np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2").tobytes())


def run_feed(feed: CameraFeed | MicrophoneFeed, pipeline: Pipeline) -> tuple[float, int]:
    """Wall seconds to read, gate and infer the whole source; windows inferred."""
    started = time.perf_counter()
    inferred = 0
    while (windows := feed.read()) is not None:
        if windows:
            pipeline.infer_local(windows, feed.model, time.time())
            inferred += len(windows)
    feed.close()
    return time.perf_counter() - started, inferred


def compare(
    name: str,
    make: Callable[[bool], CameraFeed | MicrophoneFeed],
    media_s: float,
    rounds: int,
    sensor_model: LoadedModel,
    table: Table,
) -> None:
    settings = AgentSettings(publish_results=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    inferred: dict[bool, int] = {}
    for _ in range(rounds):
        for gated in (True, False):
            seconds, count = run_feed(make(gated), Pipeline(settings, sensor_model))
            times[gated].append(seconds)
            inferred[gated] = count
    gated_s, ungated_s = statistics.median(times[True]), statistics.median(times[False])
    table.add_row(
        name,
        f"{media_s:.0f}",
        f"{inferred[True]} / {inferred[False]}",
        f"{1000 * gated_s / media_s:.1f}",
        f"{1000 * ungated_s / media_s:.1f}",
        f"{ungated_s / gated_s:.2f}×",
        f"{media_s / gated_s:.0f}×",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=30)
    arguments = parser.parse_args(argv)
    camera_model = load_model(COMMITTED / "camera_edge_int8.manifest.json")
    keywords_model = load_model(COMMITTED / "keywords_edge_int8.manifest.json")
    table = Table(title=f"local sources, gated vs every window (medians of {arguments.rounds} rounds, one thread)")
    for column in (
        "source",
        "media s",
        "inferred gated / all",
        "ms per media s, gated",
        "ungated",
        "speed-up",
        "× real time",
    ):
        table.add_column(column, justify="left" if column == "source" else "right")
    with tempfile.TemporaryDirectory() as scratch:
        video, recording = Path(scratch) / "scene.avi", Path(scratch) / "room.wav"
        write_scene_video(video, arguments.frames)
        write_keyword_audio(recording, arguments.seconds)

        def camera(gated: bool) -> CameraFeed:
            settings = CameraSettings(
                source=str(video), fps=None, cooldown_s=0.3 if gated else 0.0, gate_threshold=0.01 if gated else 0.0
            )
            return CameraFeed(settings, camera_model, OpenCVCamera(str(video)), site="bench")

        def microphone(gated: bool) -> MicrophoneFeed:
            settings = MicrophoneSettings(file=recording, min_rms_dbfs=-45.0 if gated else None)
            return MicrophoneFeed(settings, keywords_model, WavFileSource(recording, block=1600), site="bench")

        compare("camera (motion gate)", camera, arguments.frames / FPS, arguments.rounds, camera_model, table)
        compare("microphone (energy gate)", microphone, arguments.seconds, arguments.rounds, keywords_model, table)
    Console(width=max(Console().width, 132)).print(table)


if __name__ == "__main__":
    main()
