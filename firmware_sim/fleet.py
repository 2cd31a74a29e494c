"""A fleet of simulated devices in one process, seeded, with its ground truth."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from firmware_sim.datasets import italy_power_demand
from firmware_sim.device import SimulatedDevice
from firmware_sim.meter import PowerMeter
from firmware_sim.settings import SimSettings


@dataclass(frozen=True, slots=True)
class FleetTotals:
    devices: int
    connected: int
    published: int
    malformed: int
    dropped: int
    reconnects: int
    faults: int


class Fleet:
    """``await fleet.run(stop)`` simulates every device until ``stop`` is set."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        days = italy_power_demand("test")
        self.devices = [
            SimulatedDevice(
                device_id,
                PowerMeter(
                    device_id,
                    days,
                    seed=settings.seed * 1_000_003 + index,
                    spike_probability=settings.spike_probability,
                ),
                settings,
                seed=settings.seed * 1_000_003 + index,
            )
            for index, device_id in enumerate(self.device_ids())
        ]

    def device_ids(self) -> list[str]:
        width = max(3, len(str(self.settings.devices - 1)))
        return [f"{self.settings.device_prefix}-{index:0{width}d}" for index in range(self.settings.devices)]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self.devices:
                    tasks.create_task(device.run(stop))
        finally:
            if self.settings.ground_truth is not None:
                self.write_ground_truth()

    def totals(self) -> FleetTotals:
        counters = [device.counters for device in self.devices]
        return FleetTotals(
            devices=len(counters),
            connected=sum(c.connected for c in counters),
            published=sum(c.published for c in counters),
            malformed=sum(c.malformed for c in counters),
            dropped=sum(c.dropped for c in counters),
            reconnects=sum(c.reconnects for c in counters),
            faults=sum(len(device.meter.faults) for device in self.devices),
        )

    def day_label(self, device: str, start_seq: int) -> str | None:
        """The true label of the day that starts at ``start_seq`` on ``device``."""
        for candidate in self.devices:
            if candidate.device_id == device:
                return candidate.meter.day_labels.get(start_seq)
        return None

    def write_ground_truth(self) -> None:
        assert self.settings.ground_truth is not None
        self.settings.ground_truth.parent.mkdir(parents=True, exist_ok=True)
        with self.settings.ground_truth.open("w") as handle:
            for device in self.devices:
                for fault in device.meter.faults:
                    handle.write(json.dumps(fault.as_record()) + "\n")
