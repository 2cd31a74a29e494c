"""The live view of a running fleet (rich): devices, publish rate against the target, buffers,
reconnects, and the faults injected so far."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table

from firmware_sim.faults import CATALOGUE
from firmware_sim.fleet import Fleet

MAX_DEVICE_ROWS = 12


@dataclass
class RateMeter:
    """Telemetry messages per second over the last interval between two looks."""

    last_count: int = 0
    last_time: float = field(default_factory=time.monotonic)
    rate: float = 0.0

    def update(self, count: int) -> float:
        now = time.monotonic()
        elapsed = now - self.last_time
        if elapsed >= 0.5:
            self.rate = (count - self.last_count) / elapsed
            self.last_count, self.last_time = count, now
        return self.rate


def target_rate(fleet: Fleet) -> float:
    """Telemetry messages per second the scenario asks for (at speed 1)."""
    speed = fleet.scenario.speed or 1.0
    return speed * sum(
        stream.config.rate_hz / stream.config.batch
        for device in fleet.devices
        for stream in device.streams
        if stream.config.enabled
    )


def render(fleet: Fleet, meter: RateMeter) -> Group:
    """One frame of the live view."""
    totals = fleet.totals()
    rate = meter.update(totals.published)
    scenario = fleet.scenario
    duration = f" of {scenario.duration_s:.0f}" if scenario.finite else ""
    title = (
        f"{scenario.name}: {totals.devices} devices, simulated {totals.simulated_s:.0f}{duration} s, "
        f"{rate:,.0f} msg/s (target {target_rate(fleet):,.0f})"
    )
    table = Table(title=title, expand=False)
    table.add_column("device", no_wrap=True)
    for column in ("profile", "sent", "buffered", "dropped", "reconnects", "faults"):
        table.add_column(column, justify="right" if column != "profile" else "left")
    faults_by_device = Counter(str(record["device"]) for record in fleet.truth.records)
    if len(fleet.devices) <= MAX_DEVICE_ROWS:
        for device in fleet.devices:
            counters = device.counters
            state = "" if counters.connected and device.link_up else " (offline)"
            table.add_row(
                device.device_id + state,
                device.identity.profile,
                f"{counters.telemetry_published:,}",
                f"{len(device.outbox):,}",
                f"{counters.dropped:,}",
                f"{counters.reconnects + counters.simulated_reconnects:,}",
                f"{faults_by_device[device.device_id]:,}",
            )
    else:
        # Too many devices to list: one row per profile.
        groups: dict[str, list[int]] = {}
        for index, device in enumerate(fleet.devices):
            groups.setdefault(device.identity.profile, []).append(index)
        for profile, indices in groups.items():
            devices = [fleet.devices[index] for index in indices]
            online = sum(d.counters.connected and d.link_up for d in devices)
            table.add_row(
                f"{len(devices):,} devices ({online:,} online)",
                profile,
                f"{sum(d.counters.telemetry_published for d in devices):,}",
                f"{sum(len(d.outbox) for d in devices):,}",
                f"{sum(d.counters.dropped for d in devices):,}",
                f"{sum(d.counters.reconnects + d.counters.simulated_reconnects for d in devices):,}",
                f"{sum(faults_by_device[d.device_id] for d in devices):,}",
            )
    kinds = Table.grid(padding=(0, 2))
    counts = fleet.truth.counts
    kinds.add_row(
        "faults injected:",
        ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items())) or "none yet",
        f"(+{fleet.active_faults()} active)",
    )
    recent = Table.grid(padding=(0, 2))
    for record in fleet.truth.recent(4):
        where = f"{record['device']}/{record['stream']}" if record["stream"] else str(record["device"])
        span = f"seq {record['start']}..{record['end']}" if record["start"] is not None else "link down"
        recent.add_row("  last:", str(record["kind"]), where, span)
    return Group(table, kinds, recent)


def catalogue_table() -> Table:
    """The fault catalogue (``edgefleet sim faults``)."""
    table = Table(title="Fault catalogue")
    for column in ("kind", "level", "what happens", "default magnitude", "default duration"):
        table.add_column(column)
    for info in CATALOGUE.values():
        magnitude = f"{info.magnitude:g} {info.magnitude_unit}" if info.magnitude_unit != "-" else "-"
        duration = "to the end" if info.duration_s == float("inf") else f"{info.duration_s:g} s"
        if info.duration_s == 0:
            duration = "one message"
        table.add_row(info.kind.value, info.level.value, info.description, magnitude, duration)
    return table
