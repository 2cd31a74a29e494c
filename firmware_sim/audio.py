"""The audio modality: a microphone hearing spoken keywords in background noise.

Keywords are synthesized offline with espeak-ng (Debian package ``espeak-ng``) at varied voices,
speeds and pitches, converted to 16 kHz mono with sox (``sox``) when it is installed (else resampled
with numpy), placed at a random offset in a one-second clip and mixed with noise at a chosen
signal-to-noise ratio. Some clips hold noise alone (``_silence_``). Each clip's label is on the
stream's label track, so a keyword-spotting model can be scored.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim.errors import SynthesisError
from firmware_sim.signals import LabelTrack
from protocol.messages import SensorKind

Values = npt.NDArray[np.float64]

SAMPLE_RATE_HZ = 16_000
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-gb+f2", "en-us+m5")
SILENCE = "_silence_"


def tools() -> dict[str, str | None]:
    """Where the media tools are (None when missing)."""
    return {"espeak-ng": shutil.which("espeak-ng"), "sox": shutil.which("sox")}


@functools.cache
def synthesize(word: str, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50) -> npt.NDArray[np.float32]:
    """A spoken word as 16 kHz mono floats in [-1, 1] (espeak-ng, then sox or numpy to resample)."""
    found = tools()
    if found["espeak-ng"] is None:
        raise SynthesisError("espeak-ng is not installed (apt-get install espeak-ng)")
    speak = [found["espeak-ng"], "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", word]
    try:
        wav = subprocess.run(speak, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SynthesisError(f"espeak-ng failed on {word!r}: {exc}") from exc
    if found["sox"] is not None:
        convert = [found["sox"], "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE_HZ), "-c", "1"]
        convert += ["-e", "signed-integer", "-b", "16", "-"]
        try:
            raw = subprocess.run(convert, input=wav, capture_output=True, check=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise SynthesisError(f"sox failed on {word!r}: {exc}") from exc
        samples: npt.NDArray[np.float32] = np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768.0)
        return samples
    return _resample_wav(wav)


def _resample_wav(wav: bytes) -> npt.NDArray[np.float32]:
    # espeak-ng writes a canonical 44-byte header, 16-bit mono PCM.
    rate = int.from_bytes(wav[24:28], "little")
    samples = np.frombuffer(wav[44:], dtype="<i2").astype(np.float32) / 32768.0
    duration = len(samples) / rate
    target = np.arange(int(duration * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    resampled: npt.NDArray[np.float32] = np.interp(target, np.arange(len(samples)) / rate, samples).astype(np.float32)
    return resampled


def mix(
    speech: npt.NDArray[np.floating[Any]], noise: npt.NDArray[np.floating[Any]], snr_db: float
) -> npt.NDArray[np.float64]:
    """Speech plus noise scaled to ``snr_db`` (power ratio over the speech's active part)."""
    clean: Values = np.asarray(speech, dtype=np.float64)
    background: Values = np.asarray(noise, dtype=np.float64)
    active = clean[np.abs(clean) > 0.01 * max(float(np.abs(clean).max()), 1e-9)]
    speech_power = float(np.mean(active**2)) if active.size else 0.0
    noise_power = float(np.mean(background**2)) or 1e-12
    if speech_power == 0.0:
        return background
    gain = float(np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0))))
    mixed: Values = clean + gain * background
    return mixed


class KeywordAudio:
    """Back-to-back one-second clips, each a keyword (or nothing) in noise, as a 16 kHz stream."""

    sensor = SensorKind.GENERIC
    unit = "FS"  # fraction of full scale
    scale = 0.1

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        words: tuple[str, ...] | list[str] = KEYWORDS,
        voices: tuple[str, ...] | list[str] = VOICES,
        snr_db: tuple[float, float] | list[float] = (5.0, 20.0),
        silence_share: float = 0.2,
        noise_level: float = 0.02,
        clip_s: float = 1.0,
    ) -> None:
        self.rng = rng
        self.words = tuple(words)
        self.voices = tuple(voices)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.silence_share = silence_share
        self.noise_level = noise_level
        self.clip_samples = int(clip_s * SAMPLE_RATE_HZ)
        self.labels: LabelTrack | None = LabelTrack()
        self._clip: Values = np.empty(0)
        self._position = 0

    def clip(self) -> tuple[str, Values]:
        """The next clip and its label."""
        noise = self._noise()
        if self.rng.random() < self.silence_share:
            return SILENCE, noise
        word = str(self.rng.choice(self.words))
        voice = str(self.rng.choice(self.voices))
        speed = int(self.rng.integers(120, 220))
        pitch = int(self.rng.integers(25, 75))
        speech = synthesize(word, voice, speed, pitch)[: self.clip_samples]
        placed = np.zeros(self.clip_samples)
        offset = int(self.rng.integers(0, self.clip_samples - len(speech) + 1))
        placed[offset : offset + len(speech)] = speech * float(self.rng.uniform(0.3, 0.9))
        return word, mix(placed, noise, float(self.rng.uniform(*self.snr_db))).clip(-1.0, 1.0)

    def _noise(self) -> Values:
        # Room noise: white hiss, a low rumble (moving-average low-pass of white noise) and mains hum.
        white = self.rng.normal(0.0, 1.0, self.clip_samples)
        rumble = np.convolve(self.rng.normal(0.0, 1.0, self.clip_samples), np.full(64, 1.0 / 8.0), mode="same")
        hum = 0.3 * np.sin(2 * np.pi * 50.0 * np.arange(self.clip_samples) / SAMPLE_RATE_HZ)
        return self.noise_level * (0.7 * white + 0.3 * rumble + hum)

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        values = np.empty(len(times))
        filled = 0
        while filled < len(times):
            if self._position >= len(self._clip):
                label, self._clip = self.clip()
                self._position = 0
                assert self.labels is not None
                self.labels.begin(seq + filled, label)
            take = min(len(times) - filled, len(self._clip) - self._position)
            values[filled : filled + take] = self._clip[self._position : self._position + take]
            self._position += take
            filled += take
        return values
