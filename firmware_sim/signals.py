"""Signal models: what a simulated sensor measures, sample by sample, before any fault.

A signal is stateful and generated in blocks, in order: ``generate(seq, times)`` returns the values of
samples ``seq .. seq+len(times)-1`` taken at ``times`` (seconds since the device started). Each signal
draws from its own seeded generator, so a device's values depend on its seed alone, not on which
other devices run beside it. Signals that replay labelled recordings keep a :class:`LabelTrack` so a
run can be scored against the truth; ``scale`` is a typical amplitude that fault magnitudes are
expressed in.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from firmware_sim import datasets
from firmware_sim.errors import ScenarioError
from protocol.messages import SensorKind

Values = npt.NDArray[np.float64]


class LabelTrack:
    """Which class a stream is replaying from which sample on: ``(start_seq, label)`` segments."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.labels: list[str] = []

    def begin(self, seq: int, label: str) -> None:
        if self.starts and self.starts[-1] == seq:
            self.labels[-1] = label
            return
        self.starts.append(seq)
        self.labels.append(label)

    def at(self, seq: int) -> str | None:
        """The label of the segment that covers ``seq``."""
        index = bisect.bisect_right(self.starts, seq) - 1
        return self.labels[index] if index >= 0 else None

    def starting_at(self, seq: int) -> str | None:
        """The label of the segment that starts exactly at ``seq`` (a day, a recording), if any."""
        index = bisect.bisect_left(self.starts, seq)
        if index < len(self.starts) and self.starts[index] == seq:
            return self.labels[index]
        return None

    def segments(self) -> list[tuple[int, str]]:
        return list(zip(self.starts, self.labels, strict=True))


class Signal(Protocol):
    """The interface every signal model offers."""

    @property
    def sensor(self) -> SensorKind: ...

    @property
    def unit(self) -> str: ...

    @property
    def scale(self) -> float:
        """A typical amplitude; fault magnitudes are multiples of it."""
        ...

    @property
    def labels(self) -> LabelTrack | None: ...

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        """Values of consecutive samples from ``seq``; ``severity`` (0..1 per sample) degrades the
        machine for signals that model a fault physically (bearing wear), and is ignored by others."""
        ...


@dataclass
class Climate:
    """Temperature or relative humidity: a daily cycle, weather (a slow AR(1) process), sensor
    noise and a slow random-walk drift of the sensor's calibration."""

    sensor: SensorKind
    unit: str
    rng: np.random.Generator
    mean: float
    daily_amplitude: float
    peak_hour: float = 15.0
    day_length_s: float = 86_400.0
    weather_std: float = 1.5
    weather_tau_s: float = 3 * 3600.0
    noise_std: float = 0.05
    drift_per_day: float = 0.05
    minimum: float = -math.inf
    maximum: float = math.inf
    labels: LabelTrack | None = None
    _weather: float = 0.0
    _drift: float = 0.0
    _last_time: float = 0.0

    def __post_init__(self) -> None:
        # Devices of one site differ a little: offset mean and phase per device.
        self.mean += float(self.rng.normal(0.0, 0.1 * max(abs(self.daily_amplitude), 1.0)))
        self.peak_hour += float(self.rng.normal(0.0, 0.5))
        self._weather = float(self.rng.normal(0.0, self.weather_std))

    @property
    def scale(self) -> float:
        return max(abs(self.daily_amplitude), self.weather_std, 0.5)

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        count = len(times)
        steps = np.diff(times, prepend=self._last_time).clip(min=0.0)
        self._last_time = float(times[-1])
        weather = np.empty(count)
        decay = np.exp(-steps / self.weather_tau_s)
        shocks = self.rng.normal(0.0, 1.0, count) * self.weather_std * np.sqrt(1.0 - decay**2)
        state = self._weather
        for index in range(count):
            state = decay[index] * state + shocks[index]
            weather[index] = state
        self._weather = state
        drift_steps = self.rng.normal(0.0, 1.0, count) * self.drift_per_day * np.sqrt(steps / self.day_length_s)
        drift = self._drift + np.cumsum(drift_steps)
        self._drift = float(drift[-1])
        phase = 2.0 * np.pi * (times / self.day_length_s - self.peak_hour / 24.0)
        values = (
            self.mean
            + self.daily_amplitude * np.cos(phase)
            + weather
            + drift
            + self.rng.normal(0.0, self.noise_std, count)
        )
        return values.clip(self.minimum, self.maximum)


def temperature(rng: np.random.Generator, **params: Any) -> Climate:
    """Air temperature in °C (defaults: an indoor-outdoor plant hall)."""
    options: dict[str, Any] = {"mean": 18.0, "daily_amplitude": 4.0, "minimum": -60.0, "maximum": 150.0}
    options.update(params)
    return Climate(sensor=SensorKind.TEMPERATURE, unit="C", rng=rng, **options)


def humidity(rng: np.random.Generator, **params: Any) -> Climate:
    """Relative humidity in %: lowest when it is warmest, so its peak is twelve hours off."""
    options: dict[str, Any] = {
        "mean": 55.0,
        "daily_amplitude": 12.0,
        "peak_hour": 3.0,
        "weather_std": 5.0,
        "noise_std": 0.3,
        "drift_per_day": 0.3,
        "minimum": 0.0,
        "maximum": 100.0,
    }
    options.update(params)
    return Climate(sensor=SensorKind.HUMIDITY, unit="%", rng=rng, **options)


@dataclass
class Vibration:
    """Acceleration of a rotating machine's bearing housing, in m/s².

    Shaft harmonics (1× dominated by imbalance, 2× by misalignment), load changes that shift speed
    and amplitude, broadband noise, and — as a bearing wears (``severity`` > 0) — an outer-race
    impulse train: decaying bursts of a structural resonance repeating at the ball-pass frequency
    (BPFO). Phases are carried across blocks so the waveform is continuous.
    """

    rng: np.random.Generator
    shaft_hz: float = 24.6
    imbalance: float = 0.6
    misalignment: float = 0.25
    third_harmonic: float = 0.08
    noise_std: float = 0.15
    bpfo_ratio: float = 3.58
    resonance_hz: float = 1_100.0
    impulse_decay_s: float = 0.0015
    impulse_amplitude: float = 4.0
    load_change_every_s: float = 120.0
    loads: tuple[float, ...] = (0.4, 0.7, 1.0)
    sensor: SensorKind = SensorKind.VIBRATION
    unit: str = "m/s2"
    labels: LabelTrack | None = None
    _shaft_phase: float = 0.0
    _ball_phase: float = 0.0
    _load: float = 0.7
    _next_load_change: float = 0.0
    _last_time: float = 0.0

    def __post_init__(self) -> None:
        self.shaft_hz *= float(self.rng.uniform(0.97, 1.03))
        self.imbalance *= float(self.rng.uniform(0.7, 1.3))
        self._load = float(self.rng.choice(self.loads))
        self._next_load_change = float(self.rng.exponential(self.load_change_every_s))
        self.labels = LabelTrack()
        self.labels.begin(0, f"load_{self._load:.1f}")

    @property
    def scale(self) -> float:
        return self.imbalance + self.misalignment

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        count = len(times)
        loads = np.full(count, self._load)
        while self._next_load_change <= times[-1]:
            index = int(np.searchsorted(times, self._next_load_change))
            self._load = float(self.rng.choice(self.loads))
            loads[index:] = self._load
            if self.labels is not None:
                self.labels.begin(seq + index, f"load_{self._load:.1f}")
            self._next_load_change += float(self.rng.exponential(self.load_change_every_s))
        # Induction motors slip under load: speed drops a little as the load rises.
        speed = self.shaft_hz * (1.0 - 0.02 * loads)
        steps = np.diff(times, prepend=self._last_time).clip(min=0.0)
        self._last_time = float(times[-1])
        shaft = self._shaft_phase + 2.0 * np.pi * np.cumsum(speed * steps)
        self._shaft_phase = float(shaft[-1] % (2.0 * np.pi))
        amplitude = 0.5 + 0.5 * loads
        values = amplitude * (
            self.imbalance * np.sin(shaft)
            + self.misalignment * np.sin(2.0 * shaft + 0.7)
            + self.third_harmonic * np.sin(3.0 * shaft + 1.9)
        )
        values += self.rng.normal(0.0, self.noise_std, count)
        ball = self._ball_phase + np.cumsum(speed * self.bpfo_ratio * steps)
        self._ball_phase = float(ball[-1] % 1.0)
        if severity is not None and np.any(severity > 0.0):
            # Time since the last ball passed the defect; impulses are far shorter than their spacing.
            since = (ball % 1.0) / (speed * self.bpfo_ratio)
            burst = np.exp(-since / self.impulse_decay_s) * np.sin(2.0 * np.pi * self.resonance_hz * since)
            jitter = 1.0 + 0.1 * self.rng.normal(0.0, 1.0, count)
            values += severity * self.impulse_amplitude * amplitude * burst * jitter
        return values


def vibration(rng: np.random.Generator, **params: Any) -> Vibration:
    if "loads" in params:
        params["loads"] = tuple(params["loads"])
    return Vibration(rng=rng, **params)


class DailyDemand:
    """A smart power meter replaying real daily demand profiles (ItalyPowerDemand), one sample per
    hour of the day: days are drawn in a seeded order, each z-normalized profile mapped onto the
    meter's own base load and daily swing. Day *k* covers seq ``24k .. 24k+23`` (edge models' windows
    are aligned on it); the track labels each day ``winter`` or ``summer``."""

    sensor = SensorKind.POWER
    unit = "kW"

    def __init__(self, rng: np.random.Generator, *, split: str = "test") -> None:
        self.rng = rng
        self.days = datasets.italy_power_demand(split)
        # A meter's typical load and daily swing, in kW.
        self.base_kw = float(rng.uniform(40.0, 60.0))
        self.swing_kw = float(rng.uniform(6.0, 12.0))
        self.labels: LabelTrack | None = LabelTrack()
        self._day: Values = np.empty(0)
        self._day_start = 0

    @property
    def scale(self) -> float:
        return self.swing_kw

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        hours = self.days.values.shape[1]
        values = np.empty(len(times))
        for offset in range(len(times)):
            index = seq + offset
            if index >= self._day_start + len(self._day) or index < self._day_start:
                day = int(self.rng.integers(len(self.days.labels)))
                self._day = self.base_kw + self.swing_kw * self.days.values[day]
                self._day_start = index - index % hours
                assert self.labels is not None
                self.labels.begin(self._day_start, self.days.labels[day])
            values[offset] = self._day[index - self._day_start]
        return values.clip(min=0.0)


# Typical idle and peak watts of ACS-F1's appliance classes, onto which z-normalized signatures map.
ACSF1_WATTS: Mapping[str, tuple[float, float]] = {
    "mobile_phone": (0.3, 6.0),
    "coffee_machine": (1.0, 1_300.0),
    "computer_station": (2.0, 180.0),
    "fridge_freezer": (1.0, 150.0),
    "hifi_system": (3.0, 45.0),
    "lamp_cfl": (0.0, 18.0),
    "laptop": (0.5, 65.0),
    "microwave_oven": (2.0, 1_150.0),
    "printer": (3.0, 450.0),
    "television": (0.5, 110.0),
}


class RecordingReplay:
    """Replays labelled recordings of one class (or of every class) back to back, optionally
    separated by idle gaps, as a smart plug or a wearable would measure them.

    Recordings are chosen by a generator seeded with ``selection_seed``, so the channels of one
    device (a wearable's six axes) can replay the same recording in step, each its own channel.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        recordings: datasets.LabelledRecordings,
        *,
        sensor: SensorKind,
        unit: str,
        channel: int = 0,
        classes: tuple[str, ...] | None = None,
        selection_seed: int | None = None,
        idle_samples: tuple[int, int] = (0, 0),
        idle_value: float = 0.0,
        noise_std: float = 0.0,
        transform: Callable[[Values, str], Values] | None = None,
    ) -> None:
        self.rng = rng
        self.recordings = recordings
        self.sensor = sensor
        self.unit = unit
        self.channel = channel
        pool = [i for i, label in enumerate(recordings.labels) if classes is None or label in classes]
        if not pool:
            raise ScenarioError(f"{recordings.name} has no recordings of classes {classes}")
        self._pool = pool
        self._selection = np.random.default_rng(selection_seed) if selection_seed is not None else rng
        self._idle_samples = (int(idle_samples[0]), int(idle_samples[1]))
        self._idle_value = idle_value
        self._noise_std = noise_std
        self._transform = transform
        self.labels: LabelTrack | None = LabelTrack()
        self._current: Values = np.empty(0)
        self._position = 0
        spread = [float(np.std(recordings.recordings[i][channel])) for i in pool[:50]]
        self._scale = max(float(np.median(spread)), 1e-3)
        if transform is not None:
            sample = transform(recordings.recordings[pool[0]][channel], recordings.labels[pool[0]])
            self._scale = max(float(np.std(sample)), 1e-3)

    @property
    def scale(self) -> float:
        return self._scale

    def _next_segment(self, seq: int) -> None:
        assert self.labels is not None
        low, high = self._idle_samples
        if high > 0 and self.labels.labels and self.labels.labels[-1] != "off":
            length = int(self._selection.integers(low, high + 1))
            if length > 0:
                self._current = np.full(length, self._idle_value)
                self._position = 0
                self.labels.begin(seq, "off")
                return
        index = self._pool[int(self._selection.integers(len(self._pool)))]
        label = self.recordings.labels[index]
        values = self.recordings.recordings[index][self.channel]
        self._current = self._transform(values, label) if self._transform is not None else values
        self._position = 0
        self.labels.begin(seq, label)

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        values = np.empty(len(times))
        filled = 0
        while filled < len(times):
            if self._position >= len(self._current):
                self._next_segment(seq + filled)
            take = min(len(times) - filled, len(self._current) - self._position)
            values[filled : filled + take] = self._current[self._position : self._position + take]
            self._position += take
            filled += take
        if self._noise_std > 0.0:
            values += self.rng.normal(0.0, self._noise_std, len(values))
        return values


def plaid_current(
    rng: np.random.Generator,
    *,
    appliance: str | None = None,
    split: str = "train",
    idle_samples: tuple[int, int] = (20, 200),
) -> RecordingReplay:
    """A smart plug's current (A), replaying PLAID switch-on recordings of one appliance class (drawn
    per device unless ``appliance`` names one), with idle gaps (in samples) between uses labelled ``off``."""
    recordings = datasets.plaid(split)
    if appliance is None:
        appliance = str(rng.choice(recordings.classes))
    if appliance not in recordings.classes:
        raise ScenarioError(f"unknown PLAID appliance {appliance!r}; one of {', '.join(recordings.classes)}")
    return RecordingReplay(
        rng,
        recordings,
        sensor=SensorKind.CURRENT,
        unit="A",
        classes=(appliance,),
        idle_samples=(int(idle_samples[0]), int(idle_samples[1])),
        idle_value=0.01,
        noise_std=0.002,
    )


def acsf1_power(
    rng: np.random.Generator,
    *,
    appliance: str | None = None,
    split: str = "train",
) -> RecordingReplay:
    """An appliance's power draw (W), replaying ACS-F1 signatures of one class mapped onto that
    class's typical idle and peak watts."""
    recordings = datasets.acsf1(split)
    if appliance is None:
        appliance = str(rng.choice(recordings.classes))
    if appliance not in ACSF1_WATTS:
        raise ScenarioError(f"unknown ACS-F1 appliance {appliance!r}; one of {', '.join(ACSF1_WATTS)}")

    def to_watts(values: Values, label: str) -> Values:
        idle, peak = ACSF1_WATTS[label]
        low, high = float(values.min()), float(values.max())
        return idle + (values - low) / max(high - low, 1e-9) * (peak - idle)

    return RecordingReplay(
        rng,
        recordings,
        sensor=SensorKind.POWER,
        unit="W",
        classes=(appliance,),
        transform=to_watts,
    )


def motion(
    rng: np.random.Generator,
    *,
    channel: str,
    selection_seed: int,
    activities: tuple[str, ...] | None = None,
    split: str = "train",
) -> RecordingReplay:
    """One axis of a wearable's accelerometer (g) or gyroscope (rad/s), replaying BasicMotions; every
    axis of a device shares ``selection_seed`` so the six replay the same activity in step."""
    recordings = datasets.basic_motions(split)
    if channel not in recordings.channels:
        raise ScenarioError(f"unknown BasicMotions channel {channel!r}; one of {', '.join(recordings.channels)}")
    gyro = channel.startswith("gyro")
    return RecordingReplay(
        rng,
        recordings,
        sensor=SensorKind.ANGULAR_VELOCITY if gyro else SensorKind.ACCELERATION,
        unit="rad/s" if gyro else "g",
        channel=recordings.channels.index(channel),
        classes=tuple(activities) if activities else None,
        selection_seed=selection_seed,
    )


@dataclass(frozen=True)
class SignalFactory:
    """How a scenario names a signal model, and what builds it."""

    name: str
    build: Callable[..., Signal]
    description: str
    modality: str = "timeseries"
    needs: tuple[str, ...] = field(default_factory=tuple)


def _keyword_audio(rng: np.random.Generator, **params: Any) -> Signal:
    from firmware_sim.audio import KeywordAudio

    return KeywordAudio(rng, **params)


def _camera_frames(rng: np.random.Generator, **params: Any) -> Signal:
    from firmware_sim.camera import CameraScene

    return CameraScene(rng, **params)


SIGNALS: Mapping[str, SignalFactory] = {
    factory.name: factory
    for factory in (
        SignalFactory("temperature", temperature, "°C: daily cycle, weather, sensor noise, drift"),
        SignalFactory("humidity", humidity, "%RH: daily cycle opposite to temperature, weather, noise, drift"),
        SignalFactory("vibration", vibration, "m/s²: shaft harmonics, imbalance, load changes, bearing impulses"),
        SignalFactory("daily_demand", lambda rng, **p: DailyDemand(rng, **p), "kW: ItalyPowerDemand days"),
        SignalFactory("plaid_current", plaid_current, "A: PLAID appliance switch-on recordings (smart plug)"),
        SignalFactory("acsf1_power", acsf1_power, "W: ACS-F1 appliance power signatures"),
        SignalFactory("motion", motion, "g or rad/s: BasicMotions accelerometer/gyroscope axis"),
        SignalFactory(
            "keyword_audio", _keyword_audio, "16 kHz mono: espeak-ng keywords in noise", "audio", ("espeak-ng",)
        ),
        SignalFactory(
            "camera_frames", _camera_frames, "grey frames of moving shapes (OpenCV)", "image", ("opencv-python",)
        ),
    )
}


def build_signal(name: str, rng: np.random.Generator, params: Mapping[str, Any]) -> Signal:
    """Build the signal model ``name`` with scenario ``params``; unknown names or params are a
    :class:`ScenarioError`."""
    try:
        factory = SIGNALS[name]
    except KeyError:
        raise ScenarioError(f"unknown signal {name!r}; one of {', '.join(SIGNALS)}") from None
    try:
        return factory.build(rng, **params)
    except TypeError as exc:
        raise ScenarioError(f"signal {name!r}: {exc}") from exc
