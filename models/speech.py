"""Spoken keywords synthesized offline with espeak-ng and mixed with noise: the audio modality's data set.

Every clip is one second at 16 kHz: a keyword spoken by an espeak-ng voice at a random speed and pitch,
placed at a random offset, mixed with seeded synthetic noise (white and brown) at a random
signal-to-noise ratio; the class ``silence`` is noise alone. Train and test use **different voices**
(espeak-ng's voice variants, split in two), so the test figure is for speakers the models never heard.
Same espeak-ng version and seed: same clips.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.datasets import WindowDataset, load_keywords

SAMPLE_RATE = 16_000
CLIP = SAMPLE_RATE
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LABELS = (*KEYWORDS, "silence")
ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
TRAIN_VARIANTS = VARIANTS[0::2]
TEST_VARIANTS = VARIANTS[1::2]


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak_version() -> str:
    """espeak-ng's version line, for cards."""
    return _espeak(["--version"]).decode(errors="replace").strip()


def _espeak(arguments: list[str]) -> bytes:
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise SpeechSynthesisError("espeak-ng is not installed (apt-get install espeak-ng)")
    result = subprocess.run([executable, *arguments], capture_output=True, check=False, timeout=30)
    if result.returncode != 0:
        raise SpeechSynthesisError(f"espeak-ng {' '.join(arguments)} failed: {result.stderr[-300:]!r}")
    return result.stdout


def synthesize(word: str, voice: str, *, speed: int, pitch: int) -> npt.NDArray[np.float64]:
    """``word`` spoken by ``voice`` at ``speed`` words per minute and ``pitch`` (0–99), as 16 kHz floats in [-1, 1]."""
    from scipy.signal import resample_poly

    data = _espeak(["-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word])
    with wave.open(io.BytesIO(data)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2").astype(np.float64)
    audio = samples / 32768.0
    if rate != SAMPLE_RATE:
        divisor = np.gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor)
    return np.asarray(audio)


def _noise(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    white = rng.normal(size=CLIP)
    brown = np.cumsum(rng.normal(size=CLIP))
    brown -= np.linspace(brown[0], brown[-1], CLIP)  # remove the random walk's drift
    mix = rng.uniform(0.2, 1.0) * white / white.std() + rng.uniform(0.0, 1.0) * brown / (brown.std() + 1e-12)
    return np.asarray(mix / mix.std())


def _clip(speech: npt.NDArray[np.float64] | None, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    noise = _noise(rng)
    if speech is None:
        return np.asarray(noise * rng.uniform(0.005, 0.05))
    voiced = np.flatnonzero(np.abs(speech) > 0.02 * np.abs(speech).max())
    speech = speech[voiced[0] : voiced[-1] + 1] if len(voiced) else speech
    speech = speech[:CLIP]
    clip = np.zeros(CLIP)
    start = int(rng.integers(0, CLIP - len(speech) + 1))
    clip[start : start + len(speech)] = speech * rng.uniform(0.3, 1.0) / (np.abs(speech).max() + 1e-12)
    signal_power = float(np.mean(speech**2) * len(speech) / CLIP)
    snr_db = rng.uniform(5.0, 20.0)
    return np.asarray(clip + noise * np.sqrt(signal_power / 10 ** (snr_db / 10)))


@dataclass(frozen=True)
class KeywordClips:
    """Clips ``[n, 16000]`` and their label indices into :data:`LABELS`."""

    clips: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]


def keyword_clips(variants: tuple[str, ...], per_label: int, *, seed: int) -> KeywordClips:
    """``per_label`` clips of every keyword (voices drawn from ``variants`` × every accent) and of silence."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for index, label in enumerate(LABELS):
        for _ in range(per_label):
            if label == "silence":
                clips.append(_clip(None, rng))
            else:
                voice = f"{ACCENTS[rng.integers(len(ACCENTS))]}+{variants[rng.integers(len(variants))]}"
                speed, pitch = int(rng.integers(120, 220)), int(rng.integers(20, 80))
                clips.append(_clip(synthesize(label, voice, speed=speed, pitch=pitch), rng))
            labels.append(index)
    return KeywordClips(np.stack(clips), np.asarray(labels, dtype=np.int64))


PCM16_FULL_SCALE = 32768.0


def pcm16(clips: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Clips in [-1, 1] as a microphone delivers them: 16-bit PCM sample values (rounded, clipped), as floats."""
    return np.clip(np.round(clips * PCM16_FULL_SCALE), -32768.0, 32767.0)


def load_keywords_pcm16() -> WindowDataset:
    """The keywords data set (:func:`models.datasets.load_keywords`) with clips as 16-bit PCM sample values.

    A device's microphone (and a WAV file) gives integers; the model's manifest scales them to [-1, 1]
    before the MFCC. Integer samples also keep an escalated second of audio within a message's size limit.
    """
    data = load_keywords()
    return dataclasses.replace(
        data,
        train_windows=pcm16(data.train_windows),
        test_windows=pcm16(data.test_windows),
    )
