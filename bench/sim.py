"""Benchmark: how many simulated devices at 1 Hz one simulator process sustains against a real
Mosquitto on this machine.

For each fleet size it starts a fresh Mosquitto on a free port (persistence off, deep queues,
``$SYS`` every second), runs the simulator in a child process (the ``thermometer`` profile: one
QoS 1 reading a second per device, health every minute, devices multiplexed over a few connections),
lets it warm up, then measures side by side over the same window: the telemetry rate the simulator
achieved against its target, the messages the broker says it received (``$SYS``) against what the
simulator says it sent, and the CPU and RSS of the simulator and of the broker. Each size is run
several times; the table shows medians.

    nice python bench/sim.py                       # 1k, 5k, 10k devices, 3 runs each
    nice python bench/sim.py --sizes 1000 --runs 1 --window 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the child: the simulator under test ---------------------------------------------------------


async def child(devices: int, port: int, mode: str, connections: int, seconds: float, qos: int) -> None:
    """Run the fleet and print one JSON line a second: monotonic time and cumulative counts."""
    from firmware_sim.fleet import Fleet
    from firmware_sim.scenario import parse_scenario
    from firmware_sim.settings import SimSettings
    from protocol.broker import BrokerSettings

    scenario = parse_scenario(
        {
            "name": "bench",
            "seed": 1,
            "clock": "live",
            "duration_s": seconds,
            "health_interval_s": 60.0,
            "telemetry_qos": qos,
            "sites": [{"name": "bench", "devices": [{"profile": "thermometer", "count": devices, "prefix": "t"}]}],
        }
    )
    settings = SimSettings(
        mode=mode,
        connections=connections,
        broker=BrokerSettings(host="127.0.0.1", port=port, keepalive_s=60),
    )
    fleet = Fleet(settings, scenario)
    stop = asyncio.Event()
    run = asyncio.create_task(fleet.run(stop))
    while not run.done():
        totals = fleet.totals()
        line = {
            "t": time.monotonic(),
            "telemetry": totals.published,
            "messages": totals.messages,
            "produced": totals.produced,
            "buffered": totals.buffered,
            "connected": totals.connected,
        }
        print(json.dumps(line), flush=True)
        await asyncio.wait({run}, timeout=1.0)
    await run


# --- the parent: broker, measurement, table -------------------------------------------------------


@dataclass
class Result:
    devices: int
    target: float
    achieved: float
    sent: float
    broker: float
    sim_cpu: float
    sim_rss_mb: float
    broker_cpu: float
    startup_s: float
    buffered: int


class SysCounter:
    """Follows ``$SYS/broker/publish/messages/received`` (updated every second by the broker)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.samples: list[tuple[float, int]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sys")  # type: ignore[attr-defined]
        self.client.on_message = self._message
        self.client.on_connect = lambda client, *_: client.subscribe("$SYS/broker/publish/messages/received")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        self.samples.append((time.monotonic(), int(message.payload)))

    def at(self, moment: float) -> tuple[float, int]:
        """The first sample at or after ``moment``."""
        for sample in self.samples:
            if sample[0] >= moment:
                return sample
        return self.samples[-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def one_run(devices: int, args: argparse.Namespace, progress: Any) -> Result:
    import psutil

    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as directory:
        port = free_port()
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 1000000\nmax_connections -1\nsys_interval 1\n"
        )
        broker = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        sim: subprocess.Popen[str] | None = None
        counter: SysCounter | None = None
        try:
            time.sleep(0.5)
            counter = SysCounter(port)
            total = args.warmup + args.window + 300.0  # the parent stops it once measured
            started = time.monotonic()
            sim = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "child",
                    *(str(devices), str(port), args.mode, str(args.connections), str(total), str(args.qos)),
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            assert sim.stdout is not None
            sim_process = psutil.Process(sim.pid)
            broker_process = psutil.Process(broker.pid)
            lines: list[dict[str, Any]] = []
            startup = None
            window_start: dict[str, Any] | None = None
            cpu_start = broker_start = 0.0
            for raw in sim.stdout:
                line = json.loads(raw)
                lines.append(line)
                if startup is None and line["connected"] == devices:
                    startup = line["t"] - started
                    ready_at = line["t"]
                if startup is not None and window_start is None and line["t"] >= ready_at + args.warmup:
                    window_start = line
                    times = sim_process.cpu_times()
                    cpu_start = times.user + times.system
                    times = broker_process.cpu_times()
                    broker_start = times.user + times.system
                if window_start is not None and line["t"] >= window_start["t"] + args.window:
                    times = sim_process.cpu_times()
                    cpu = times.user + times.system - cpu_start
                    times = broker_process.cpu_times()
                    broker_cpu = times.user + times.system - broker_start
                    rss = sim_process.memory_info().rss
                    elapsed = line["t"] - window_start["t"]
                    first, last = counter.at(window_start["t"]), counter.at(line["t"])
                    sys_elapsed = max(last[0] - first[0], 1e-9)
                    result = Result(
                        devices=devices,
                        target=float(devices),
                        achieved=(line["telemetry"] - window_start["telemetry"]) / elapsed,
                        sent=(line["messages"] - window_start["messages"]) / elapsed,
                        broker=(last[1] - first[1]) / sys_elapsed,
                        sim_cpu=cpu / elapsed,
                        sim_rss_mb=rss / 2**20,
                        broker_cpu=broker_cpu / elapsed,
                        startup_s=startup or 0.0,
                        buffered=int(line["buffered"]),
                    )
                    sim.terminate()
                    return result
                if progress is not None:
                    phase = "connecting" if startup is None else ("warm-up" if window_start is None else "measuring")
                    progress(f"{devices:,} devices: {phase}, {line['telemetry']:,} readings sent")
            raise RuntimeError(f"simulator ended early after {len(lines)} lines (exit {sim.wait()})")
        finally:
            if counter is not None:
                counter.close()
            for process in (sim, broker):
                if process is not None and process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,10000", help="Fleet sizes (devices at 1 Hz).")
    parser.add_argument("--runs", type=int, default=3, help="Runs per size (the table shows medians).")
    parser.add_argument("--window", type=float, default=20.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=5.0, help="Seconds after every device connected.")
    parser.add_argument("--mode", default="multiplexed", choices=("multiplexed", "per_device"))
    parser.add_argument("--connections", type=int, default=4, help="Connections of the multiplexed mode.")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1), help="Telemetry QoS.")
    parser.add_argument("--json", type=Path, help="Also write every run's figures here.")
    args = parser.parse_args()
    if shutil.which("mosquitto") is None:
        sys.exit("needs mosquitto on PATH (apt-get install mosquitto)")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[int, list[Result]] = {}
    with console.status("starting") as status:
        for size in sizes:
            for number in range(args.runs):

                def progress(text: str, number: int = number) -> None:
                    status.update(f"run {number + 1}/{args.runs}: {text}")

                result = one_run(size, args, progress)
                results.setdefault(size, []).append(result)
                console.print(
                    f"{size:>6,} devices, run {number + 1}: {result.achieved:,.0f}/s of {result.target:,.0f} "
                    f"({result.achieved / result.target:.1%}), broker {result.broker:,.0f}/s, "
                    f"sim CPU {result.sim_cpu:.0%}, RSS {result.sim_rss_mb:.0f} MB"
                )
    connections = (
        f"multiplexed over {args.connections} connections" if args.mode == "multiplexed" else "a connection per device"
    )
    table = Table(
        title=f"Simulator at 1 Hz per device, {connections}, QoS {args.qos}: "
        f"medians of {args.runs} run(s), {args.window:g} s windows, {os.cpu_count()} cores"
    )
    columns = (
        "devices",
        "target/s",
        "achieved/s",
        "achieved ÷ target",
        "sim sent/s",
        "broker received/s",
        "broker ÷ sent",
        "sim CPU",
        "sim RSS",
        "broker CPU",
        "connect s",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for size, runs in results.items():

        def median(name: str, runs: list[Result] = runs) -> float:
            return float(statistics.median(float(getattr(run, name)) for run in runs))

        achieved, sent, broker = median("achieved"), median("sent"), median("broker")
        table.add_row(
            f"{size:,}",
            f"{float(size):,.0f}",
            f"{achieved:,.0f}",
            f"{achieved / size:.1%}",
            f"{sent:,.0f}",
            f"{broker:,.0f}",
            f"{broker / sent:.1%}" if sent else "-",
            f"{median('sim_cpu'):.0%}",
            f"{median('sim_rss_mb'):.0f} MB",
            f"{median('broker_cpu'):.0%}",
            f"{median('startup_s'):.1f}",
        )
    console.print(table)
    if args.json is not None:
        args.json.write_text(json.dumps({size: [vars(r) for r in runs] for size, runs in results.items()}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        devices, port, mode, connections, seconds, qos = sys.argv[2:8]
        asyncio.run(child(int(devices), int(port), mode, int(connections), float(seconds), int(qos)))
    else:
        main()
