"""A microphone as a local source: 16-bit audio blocks through sounddevice (or a WAV file), windowed with a hop."""

from __future__ import annotations

import math
import time
import wave
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.errors import FeedError, ModelLoadError
from edge_agent.model import LoadedModel
from edge_agent.settings import MicrophoneSettings
from edge_agent.windowing import ReadyWindow, StreamKey, Windower

FULL_SCALE = 32768.0


class AudioSource(Protocol):
    """Where audio comes from: mono 16-bit PCM at ``sample_rate``. ``read`` blocks until the next block;
    ``None`` when the source has ended."""

    sample_rate: int

    def read(self) -> npt.NDArray[np.int16] | None: ...

    def close(self) -> None: ...


class WavFileSource:
    """A 16-bit mono WAV file, read in blocks of ``block`` samples (for tests, replays and recordings)."""

    def __init__(self, path: Path, *, block: int) -> None:
        try:
            self._file = wave.open(str(path), "rb")  # noqa: SIM115  (closed by close())
        except (OSError, wave.Error, EOFError) as exc:
            raise FeedError(f"cannot read WAV file {path}: {exc}") from exc
        if self._file.getsampwidth() != 2 or self._file.getnchannels() != 1:
            self._file.close()
            raise FeedError(
                f"WAV file {path} has {self._file.getnchannels()} channel(s) of {8 * self._file.getsampwidth()} "
                "bits; the microphone source reads 16-bit mono"
            )
        self.sample_rate = self._file.getframerate()
        self._block = block

    def read(self) -> npt.NDArray[np.int16] | None:
        data = self._file.readframes(self._block)
        if not data:
            return None
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def close(self) -> None:
        self._file.close()


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
        raise FeedError(
            "the microphone source needs sounddevice and PortAudio: install the 'edge-audio' extra "
            f"(pip install 'edgefleet[edge-audio]') and libportaudio2 ({exc})"
        ) from exc
    return sounddevice


class SoundDeviceMicrophone:
    """A sound card input through sounddevice (PortAudio), mono 16-bit at the model's sample rate."""

    def __init__(self, device: int | str | None, *, sample_rate: int, block: int) -> None:
        sounddevice = _sounddevice()
        try:
            self._stream = sounddevice.InputStream(
                samplerate=sample_rate, channels=1, dtype="int16", blocksize=block, device=device
            )
            self._stream.start()
        except Exception as exc:  # PortAudioError and ValueError for unknown devices or rates
            raise FeedError(f"cannot open the microphone {device!r} at {sample_rate} Hz: {exc}") from exc
        self.sample_rate = sample_rate
        self._block = block
        self.overflows = 0

    def read(self) -> npt.NDArray[np.int16] | None:
        data, overflowed = self._stream.read(self._block)
        self.overflows += bool(overflowed)
        return np.asarray(data, dtype=np.int16).reshape(-1)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def model_sample_rate(model: LoadedModel) -> int:
    """The sample rate the microphone model was trained at (its manifest's)."""
    rate = model.manifest.input.sample_rate_hz
    if rate is None or rate != int(rate):
        raise ModelLoadError(f"model {model.manifest.name} states no whole sample rate; a microphone needs one")
    return int(rate)


def rms_dbfs(values: npt.ArrayLike) -> float:
    """Root mean square of 16-bit samples in dB relative to full scale (silence: ``-inf``)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(values, dtype=np.float64)))))
    return 20.0 * math.log10(rms / FULL_SCALE) if rms > 0 else float("-inf")


class MicrophoneFeed:
    """Audio blocks from an :class:`AudioSource` cut into the model's windows, one every ``hop_s``.

    Windows are aligned on sample numbers as sensor windows are on sequence numbers (window *k* starts at
    sample ``k * hop``); a window quieter than ``min_rms_dbfs`` is not inferred. Counts: ``blocks``,
    ``samples``, ``windows``, ``inferred``, ``gated_quiet``.
    """

    kind = "microphone"

    def __init__(
        self,
        settings: MicrophoneSettings,
        model: LoadedModel,
        source: AudioSource,
        *,
        site: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        rate = model_sample_rate(model)
        if source.sample_rate != rate:
            raise FeedError(
                f"the audio source gives {source.sample_rate} Hz; model {model.manifest.name} takes {rate} Hz"
            )
        hop = model.hop if settings.hop_s is None else max(1, round(settings.hop_s * rate))
        self.settings = settings
        self.model = model
        self.source = source
        self.key = StreamKey(site=site, device=settings.device_id, stream=settings.stream)
        self.name = f"{settings.device_id}/{settings.stream}"
        self.windower = Windower(size=model.window_size, hop=hop)
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._samples = 0

    def read(self) -> list[ReadyWindow] | None:
        """Read one block (blocking); the windows it completes that are loud enough, or ``None`` at the end."""
        block = self.source.read()
        if block is None:
            return None
        self.counts["blocks"] += 1
        self.counts["samples"] += len(block)
        spec = self.model.manifest.input
        ready = self.windower.add(self.key, spec.sensor, spec.unit, self._samples, block.tolist(), self._clock())
        self._samples += len(block)
        windows = []
        for window in ready:
            self.counts["windows"] += 1
            threshold = self.settings.min_rms_dbfs
            if threshold is not None and rms_dbfs(window.values) < threshold:
                self.counts["gated_quiet"] += 1
                continue
            self.counts["inferred"] += 1
            windows.append(window)
        return windows

    def close(self) -> None:
        self.source.close()


def block_samples(settings: MicrophoneSettings, rate: int) -> int:
    """Samples per read block."""
    return max(1, round(settings.block_s * rate))
