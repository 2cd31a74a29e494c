"""Device profiles (a set of streams, each a signal model) and how a scenario's devices are built.

Built-in profiles cover every modality; a scenario may extend them or define its own. Each device
gets its own seeds, derived from the scenario seed and the device's position in the scenario, so a
device's signals and faults do not change when other devices are added after it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from firmware_sim.errors import ScenarioError
from firmware_sim.faults import FaultKind, GroundTruth, StreamFaults
from firmware_sim.firmware import (
    Clock,
    DeviceFirmware,
    FirmwareIdentity,
    FirmwareOptions,
    MessageIds,
    Stream,
    StreamConfig,
)
from firmware_sim.scenario import DeviceGroup, ProfileSpec, Scenario, StreamSpec
from firmware_sim.signals import SIGNALS, Vibration, build_signal
from protocol.topics import Kind, Topic

CAMERA_WIDTH, CAMERA_HEIGHT, CAMERA_FPS = 32, 24, 2.0

BUILT_IN: Mapping[str, ProfileSpec] = {
    "smart_meter": ProfileSpec(
        description="a building's power meter replaying ItalyPowerDemand days, one sample per hour of demand",
        streams=[StreamSpec(name="power", signal="daily_demand", rate_hz=1.0)],
    ),
    "thermometer": ProfileSpec(
        description="one temperature reading a second (the benchmark's device)",
        streams=[StreamSpec(name="temperature", signal="temperature", rate_hz=1.0, decimals=2)],
    ),
    "climate": ProfileSpec(
        description="a room or greenhouse sensor: temperature and humidity",
        streams=[
            StreamSpec(name="temperature", signal="temperature", rate_hz=0.1, decimals=2),
            StreamSpec(name="humidity", signal="humidity", rate_hz=0.1, decimals=1),
        ],
    ),
    "motor": ProfileSpec(
        description="a motor's bearing accelerometer (2.56 kHz, 0.1 s batches) and winding temperature",
        streams=[
            StreamSpec(name="vibration", signal="vibration", rate_hz=2560.0, batch=256, decimals=4),
            StreamSpec(
                name="temperature",
                signal="temperature",
                rate_hz=0.1,
                decimals=2,
                params={"mean": 55.0, "daily_amplitude": 3.0, "weather_std": 1.0},
            ),
        ],
    ),
    "smart_plug": ProfileSpec(
        description="a smart plug measuring an appliance's current (PLAID recordings, class-labelled)",
        streams=[StreamSpec(name="current", signal="plaid_current", rate_hz=10.0, decimals=4)],
    ),
    "appliance_meter": ProfileSpec(
        description="an appliance's power draw (ACS-F1 signatures, class-labelled)",
        streams=[StreamSpec(name="power", signal="acsf1_power", rate_hz=1.0, decimals=2)],
    ),
    "wearable": ProfileSpec(
        description="a wrist-worn IMU replaying BasicMotions activities, six axes at 10 Hz",
        streams=[
            StreamSpec(name=axis, signal="motion", rate_hz=10.0, decimals=4, params={"channel": axis})
            for axis in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
        ],
    ),
    "voice": ProfileSpec(
        description="a microphone hearing keywords in noise, 16 kHz mono in quarter-second batches",
        streams=[StreamSpec(name="mic", signal="keyword_audio", rate_hz=16_000.0, batch=4_000, decimals=4)],
    ),
    "camera": ProfileSpec(
        description=f"a camera: {CAMERA_WIDTH}x{CAMERA_HEIGHT} grey frames of moving shapes at {CAMERA_FPS:g} fps",
        streams=[
            StreamSpec(
                name="frames",
                signal="camera_frames",
                rate_hz=CAMERA_FPS * CAMERA_WIDTH * CAMERA_HEIGHT,
                batch=CAMERA_WIDTH * CAMERA_HEIGHT,
                decimals=3,
                params={"width": CAMERA_WIDTH, "height": CAMERA_HEIGHT},
            )
        ],
    ),
}


def resolve_profile(name: str, custom: Mapping[str, ProfileSpec], _seen: tuple[str, ...] = ()) -> ProfileSpec:
    """A profile with its ``extends`` chain applied."""
    if name in _seen:
        raise ScenarioError(f"profile {name!r} extends itself ({' -> '.join((*_seen, name))})")
    spec = custom.get(name) or BUILT_IN.get(name)
    if spec is None:
        known = sorted({*BUILT_IN, *custom})
        raise ScenarioError(f"unknown profile {name!r}; one of {', '.join(known)}")
    if spec.extends is None:
        return spec
    base = resolve_profile(spec.extends, custom, (*_seen, name))
    streams = {stream.name: stream for stream in base.streams}
    for stream in spec.streams:
        streams[stream.name] = stream
    return ProfileSpec(
        description=spec.description or base.description,
        streams=list(streams.values()),
        firmware_version=spec.firmware_version or base.firmware_version,
    )


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """Where a device sits in the scenario: enough to build it, deterministically."""

    number: int  # position in the whole scenario, the device's seed
    site: str
    device_id: str
    profile: str
    group: DeviceGroup


def plan_devices(scenario: Scenario) -> Iterator[DevicePlan]:
    """Every device of the scenario, in order; refuses duplicate device ids."""
    seen: set[str] = set()
    number = 0
    for site in scenario.sites:
        for group in site.devices:
            prefix = group.prefix or group.profile.replace("_", "-")
            width = max(3, len(str(group.count - 1)))
            for index in range(group.count):
                device_id = f"{prefix}-{index:0{width}d}"
                if len(device_id) > 64:
                    raise ScenarioError(f"device id {device_id!r} is longer than 64 characters")
                if device_id in seen:
                    raise ScenarioError(f"device id {device_id!r} appears twice; give the groups distinct prefixes")
                seen.add(device_id)
                yield DevicePlan(number, site.name, device_id, group.profile, group)
                number += 1


def _stream_specs(plan: DevicePlan, profile: ProfileSpec) -> list[StreamSpec]:
    group = plan.group
    names = {stream.name for stream in profile.streams}
    for name in (*group.rates, *group.params):
        if name not in names:
            raise ScenarioError(f"profile {plan.profile!r} has no stream {name!r}")
    specs = []
    for stream in profile.streams:
        rate = group.rates.get(stream.name, group.rate_hz or stream.rate_hz)
        params = {**stream.params, **group.params.get(stream.name, {})}
        specs.append(stream.model_copy(update={"rate_hz": rate, "params": params}))
    return specs


def build_device(
    plan: DevicePlan,
    scenario: Scenario,
    *,
    clock: Clock,
    truth: GroundTruth,
    root: str,
) -> DeviceFirmware:
    """The firmware of one planned device, with its streams, signals and fault schedules."""
    profile = resolve_profile(plan.profile, scenario.profiles)
    seeds = np.random.SeedSequence([scenario.seed, plan.number])
    stream_seeds = seeds.spawn(len(profile.streams) + 1)
    streams = []
    for index, spec in enumerate(_stream_specs(plan, profile)):
        if spec.signal not in SIGNALS:
            raise ScenarioError(f"stream {spec.name!r} of profile {plan.profile!r}: unknown signal {spec.signal!r}")
        signal_seed, fault_seed, garbage_seed, phase_seed = stream_seeds[index].spawn(4)
        params = dict(spec.params)
        if spec.signal == "motion":
            # A wearable's axes replay the same recordings in step.
            params.setdefault("selection_seed", int(seeds.generate_state(1)[0]))
        signal = build_signal(spec.signal, np.random.default_rng(signal_seed), params)
        rules = []
        for fault_number, fault in enumerate(scenario.faults):
            if not fault.matches(plan.site, plan.device_id, spec.name):
                continue
            if fault.kind is FaultKind.BEARING_FAULT and not isinstance(signal, Vibration):
                continue
            if fault.share < 1.0:
                chooser = np.random.default_rng([scenario.seed, fault_number, plan.number])
                if chooser.random() >= fault.share:
                    continue
            rules.append(fault.rule())
        faults = StreamFaults(
            rules,
            rng=np.random.default_rng(fault_seed),
            device=plan.device_id,
            stream=spec.name,
            scale=signal.scale,
            batch=spec.batch,
            truth=truth,
        )
        topic = Topic(site=plan.site, device=plan.device_id, kind=Kind.TELEMETRY, stream=spec.name, root=root)
        stream = Stream(
            StreamConfig(spec.name, spec.rate_hz, spec.batch, spec.decimals),
            signal,
            faults,
            topic=str(topic),
            garbage_rng=np.random.default_rng(garbage_seed),
        )
        # Devices do not sample in lockstep: each stream starts at its own phase within its period.
        stream.sample_time = float(np.random.default_rng(phase_seed).uniform(0.0, 1.0 / spec.rate_hz))
        streams.append(stream)
    identity = FirmwareIdentity(
        device_id=plan.device_id,
        site=plan.site,
        profile=plan.profile,
        firmware_version=profile.firmware_version or scenario.firmware_version,
        root=root,
    )
    options = FirmwareOptions(
        health_interval_s=scenario.health_interval_s,
        buffer_limit=scenario.buffer_limit,
        reproducible=scenario.clock == "reproducible",
        telemetry_qos=scenario.telemetry_qos,
    )
    id_seed = int(stream_seeds[-1].generate_state(2, np.uint64)[0] >> np.uint64(1))
    ids = MessageIds(plan.device_id, id_seed if scenario.clock == "reproducible" else None)
    return DeviceFirmware(identity, streams, clock=clock, ids=ids, options=options)


def check_faults(scenario: Scenario) -> None:
    """Refuse a bearing fault aimed at streams that are not vibration."""
    for fault in scenario.faults:
        if fault.kind is FaultKind.BEARING_FAULT:
            vibration = {
                stream.name
                for site in scenario.sites
                for group in site.devices
                for stream in resolve_profile(group.profile, scenario.profiles).streams
                if stream.signal == "vibration"
            }
            if not any(fnmatch.fnmatchcase(name, fault.stream) for name in vibration):
                raise ScenarioError("a bearing_fault needs a vibration stream to act on (profile 'motor')")
