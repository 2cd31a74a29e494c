"""Signal models look like what they model: daily cycles, machine spectra, real recordings."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_sim.datasets import acsf1, italy_power_demand, plaid
from firmware_sim.errors import ScenarioError
from firmware_sim.signals import ACSF1_WATTS, DailyDemand, build_signal, humidity, temperature, vibration
from tests.unit.firmware_sim.conftest import scenario, simulate


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_temperature_follows_the_day_and_humidity_opposes_it() -> None:
    times = np.arange(0.0, 4 * 86_400.0, 600.0)
    heat = temperature(rng(1), daily_amplitude=5.0, weather_std=0.5)
    damp = humidity(rng(2), weather_std=1.0)
    t = np.concatenate([heat.generate(i, times[i : i + 64]) for i in range(0, len(times), 64)])
    h = np.concatenate([damp.generate(i, times[i : i + 64]) for i in range(0, len(times), 64)])
    daily = np.cos(2 * np.pi * (times / 86_400.0 - 15.0 / 24.0))
    assert np.corrcoef(t, daily)[0, 1] > 0.8
    assert np.corrcoef(t, h)[0, 1] < -0.6
    assert h.min() >= 0.0 and h.max() <= 100.0
    assert 5.0 < t.mean() < 30.0


def test_vibration_shows_shaft_harmonics_and_a_bearing_fault_at_the_ball_pass_frequency() -> None:
    rate = 2560.0
    times = np.arange(0, 4 * 2560) / rate
    healthy = vibration(rng(3), load_change_every_s=1e9)
    worn = vibration(rng(3), load_change_every_s=1e9)
    clean = healthy.generate(0, times)
    faulty = worn.generate(0, times, severity=np.ones(len(times)))
    frequencies = np.fft.rfftfreq(len(times), 1 / rate)
    spectrum = np.abs(np.fft.rfft(clean))
    speed = healthy.shaft_hz * (1.0 - 0.02 * healthy._load)
    assert abs(frequencies[np.argmax(spectrum)] - speed) < 0.5  # 1x (imbalance) dominates

    # Envelope analysis: band-pass around the resonance, rectify, look for the BPFO line.
    def envelope_peak(signal: np.ndarray) -> tuple[float, float]:
        band = np.fft.rfft(signal)
        band[(frequencies < 800) | (frequencies > 1280)] = 0
        envelope = np.abs(np.fft.irfft(band, len(signal)))
        spectrum = np.abs(np.fft.rfft(envelope - envelope.mean()))
        window = (frequencies > 40) & (frequencies < 200)
        peak = np.argmax(np.where(window, spectrum, 0))
        return float(frequencies[peak]), float(spectrum[peak] / np.median(spectrum[window]))

    bpfo = speed * worn.bpfo_ratio
    where, prominence = envelope_peak(faulty)
    assert abs(where - bpfo) < 1.0
    assert prominence > 10.0
    assert envelope_peak(clean)[1] < prominence / 3


def test_a_meter_replays_whole_real_days_aligned_on_seq() -> None:
    days = italy_power_demand("test")
    meter = DailyDemand(rng(3))
    values = meter.generate(0, np.zeros(72))
    again = DailyDemand(rng(3)).generate(0, np.zeros(72))
    assert values.tolist() == again.tolist()
    for day in range(3):
        segment = values[24 * day : 24 * day + 24]
        assert max(np.corrcoef(segment, row)[0, 1] for row in days.values) > 0.999
    assert meter.labels is not None
    assert [start for start, _ in meter.labels.segments()] == [0, 24, 48]
    assert meter.labels.starting_at(24) in {"winter", "summer"}
    assert meter.labels.starting_at(25) is None
    assert values.min() > 0.0


def test_a_smart_plug_replays_real_current_of_one_appliance_with_idle_gaps() -> None:
    plug = build_signal("plaid_current", rng(4), {"appliance": "microwave", "idle_samples": [5, 10]})
    values = plug.generate(0, np.zeros(3000))
    assert plug.labels is not None
    labels = {label for _, label in plug.labels.segments()}
    assert labels == {"microwave", "off"}
    recordings = plaid("train")
    _, first_label = plug.labels.segments()[0]
    assert first_label == "microwave"
    length = next(start for start, _ in plug.labels.segments()[1:])
    replayed = values[:length]
    assert any(
        len(recordings.recordings[i][0]) == length and np.allclose(recordings.recordings[i][0], replayed, atol=0.01)
        for i in recordings.of_class("microwave")
    )
    with pytest.raises(ScenarioError, match="unknown PLAID appliance"):
        build_signal("plaid_current", rng(4), {"appliance": "toaster"})


def test_appliance_power_is_mapped_onto_the_class_watts() -> None:
    socket = build_signal("acsf1_power", rng(5), {"appliance": "coffee_machine"})
    values = socket.generate(0, np.zeros(3000))
    idle, peak = ACSF1_WATTS["coffee_machine"]
    assert values.min() >= idle - 1e-9 and values.max() <= peak + 1e-9
    assert values.max() > 0.5 * peak
    assert len(acsf1("train").of_class("coffee_machine")) == 10


async def test_a_wearables_six_axes_replay_the_same_activity_in_step() -> None:
    document = scenario(
        duration_s=60.0, sites=[{"name": "gym", "devices": [{"profile": "wearable", "count": 2, "prefix": "watch"}]}]
    )
    fleet, _ = await simulate(document)
    for device in ("watch-000", "watch-001"):
        tracks = {
            axis: fleet.device(device).streams[index].signal.labels.segments()  # type: ignore[union-attr]
            for axis, index in fleet.device(device).by_name.items()  # type: ignore[union-attr]
        }
        assert len({tuple(track) for track in tracks.values()}) == 1
        assert fleet.label(device, "gyro_z", 0) in {"standing", "walking", "running", "badminton"}
    first = fleet.device("watch-000").streams[0].signal.labels.segments()  # type: ignore[union-attr]
    second = fleet.device("watch-001").streams[0].signal.labels.segments()  # type: ignore[union-attr]
    assert first != second


def test_unknown_signals_and_parameters_are_scenario_errors() -> None:
    with pytest.raises(ScenarioError, match="unknown signal"):
        build_signal("thermal_camera", rng(), {})
    with pytest.raises(ScenarioError, match="temperature"):
        build_signal("temperature", rng(), {"colour": "red"})
