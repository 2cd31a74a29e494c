"""Benchmark of the edge agent against a real Mosquitto, side by side with a bare subscriber.

    python bench/edge_agent.py [--repeat 3] [--windows 40] [--devices 20] [--skip-install-size | --only-install-size]

Figures, each the median of the repeats, and their ratios to the goals of the edge-agent issue:
- throughput: readings/s through validation, windowing and inference (agent pinned to one core)
  against a bare aiomqtt subscriber pinned to the same core, both fed by one publisher process;
- latency: sensor-to-decision p50/p99 (reading timestamp to the decision's timestamp, same clock)
  against the bare publish-to-subscriber hop;
- RSS of the agent with its model loaded; cold start to first decision;
- installed size of a device install (requirements/edge-device.txt and the edgefleet wheel, --no-deps), on
  aarch64 (pip's manylinux wheels, `pip install --target --platform`) and in a fresh virtual environment here,
  beside the `edge` extra as pip resolves it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from protocol import InferenceResult, TelemetryReading, decode, encode  # noqa: E402

MANIFEST = REPO / "models" / "quantized" / "italy_power_edge_int8.manifest.json"
WINDOW = 24
AGENT_CORE = 1
PUBLISHER_CORE = 0
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
    )
    process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def readings(devices: int, windows: int, *, start_seq: int = 0) -> list[tuple[str, int, str]]:
    """(topic, seq, device) in sending order: every device's sample k before any sample k+1."""
    order = []
    for seq in range(start_seq, start_seq + windows * WINDOW):
        for index in range(devices):
            device = f"meter-{index:03d}"
            order.append((f"edgefleet/bench/{device}/telemetry/power", seq, device))
    return order


def payload(device: str, seq: int) -> bytes:
    value = 50.0 + 10.0 * ((seq % WINDOW) / WINDOW) + (hash((device, seq)) % 100) / 100.0
    return encode(
        TelemetryReading(
            device_id=device, timestamp=time.time(), stream="power", sensor="power", unit="kW", seq=seq, value=value
        )
    )


PUBLISHER = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import paho.mqtt.client as paho
from bench.edge_agent import readings, payload
port, devices, windows = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rate, start = float(sys.argv[5]), int(sys.argv[6])
client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
client.max_inflight_messages_set(1000)
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.loop_start()
sent = {}
begin = time.time()
for n, (topic, seq, device) in enumerate(readings(devices, windows, start_seq=start)):
    if rate > 0:
        delay = begin + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)
    data = payload(device, seq)
    client.publish(topic, data, qos=1)
    if (seq + 1) % 24 == 0:
        sent[f"{device}/{seq + 1 - 24}"] = json.loads(data)["ts"]
while client.want_write() or len(client._out_messages):
    time.sleep(0.01)
client.loop_stop()
print(json.dumps({"began": begin, "completing": sent}))
"""

BARE = r"""
import asyncio, json, sys, time
import aiomqtt
async def main(port, expected, name):
    got, first, latencies = 0, None, []
    async with aiomqtt.Client("127.0.0.1", port, identifier=name, clean_session=False) as client:
        await client.subscribe("edgefleet/bench/+/telemetry/#", qos=1)
        print("ready", flush=True)
        if expected == 0:
            return
        async for message in client.messages:
            now = time.time()
            got += 1
            first = first or now
            ts = json.loads(message.payload)["ts"]
            latencies.append(now - ts)
            if got >= expected:
                break
    print(json.dumps({"first": first, "last": time.time(), "count": got, "latencies": latencies[-2000:]}))
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
"""


def pinned(core: int) -> dict[str, object]:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > core:  # type: ignore[operator]
            os.sched_setaffinity(0, {core})

    return {"preexec_fn": pin}


def publish(port: int, devices: int, windows: int, rate: float, start: int = 0) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PUBLISHER, str(REPO), str(port), str(devices), str(windows), str(rate), str(start)],
        capture_output=True, text=True, check=True, cwd=REPO, **pinned(PUBLISHER_CORE),  # type: ignore[arg-type]
    )  # fmt: skip
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def bare(port: int, expected: int, name: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", BARE, str(port), str(expected), name],
        stdout=subprocess.PIPE, text=True, **pinned(AGENT_CORE),  # type: ignore[arg-type]
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def bare_drain(port: int, devices: int, windows: int, run: int) -> float:
    """Readings/s of a bare subscriber draining a backlog that waits for it at the broker."""
    name = f"bench-bare-drain-{run}"
    bare(port, 0, name).wait(30)  # registers the persistent session, then leaves
    expected = devices * windows * WINDOW
    publish(port, devices, windows, 0.0)
    out, _ = bare(port, expected, name).communicate(timeout=600)
    result = json.loads(out)
    return float((result["count"] - 1) / max(1e-9, result["last"] - result["first"]))


def bare_latency(port: int, devices: int, windows: int, rate: float, run: int) -> list[float]:
    process = bare(port, devices * windows * WINDOW, f"bench-bare-latency-{run}")
    publish(port, devices, windows, rate)
    out, _ = process.communicate(timeout=600)
    return list(json.loads(out)["latencies"])


def agent_config(directory: Path, port: int, name: str, max_wait_ms: float) -> Path:
    config = directory / f"{name}.toml"
    config.write_text(
        f"""
[agent]
site = "bench"
client_id = "bench-{name}"
model_manifest = "{MANIFEST}"
outbox_path = "{directory / (name + "-outbox.db")}"
max_batch = 32
max_wait_ms = {max_wait_ms}
[agent.broker]
port = {port}
[agent.validation]
max_age_s = 3600.0
"""
    )
    return config


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start an agent and return once it has subscribed (its session then exists at the broker)."""
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as handle:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config), "--log-level", "INFO"],
            stdout=handle, stderr=handle, cwd=REPO, **pinned(AGENT_CORE),  # type: ignore[arg-type]
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while b"event=connected" not in log.read_bytes()[offset:]:
        if agent.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not start: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    return agent


async def collect_results(
    port: int, expected: int, ready: asyncio.Event, out: dict[tuple[str, int], float]
) -> tuple[float, float]:
    """Decision timestamps by (device, window start); returns when the first and the last result arrived."""
    first = 0.0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-results-{time.time_ns()}") as client:
        await client.subscribe("edgefleet/bench/+/inference/#", qos=1)
        ready.set()
        async for message in client.messages:
            result = decode(bytes(message.payload))  # type: ignore[arg-type]
            assert isinstance(result, InferenceResult)
            out[(result.device_id, result.window_start_seq)] = result.timestamp
            first = first or time.time()
            if len(out) >= expected:
                return first, time.time()
    raise RuntimeError("result stream ended")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def agent_drain(directory: Path, port: int, devices: int, windows: int, run: int) -> float:
    """Readings/s of the agent draining a backlog that waits for it at the broker (validation, windowing,
    inference, decisions and their publication)."""
    config = agent_config(directory, port, f"drain{run}", max_wait_ms=0.0)
    agent = start_agent(config, directory / "agent.log")  # registers its persistent session
    agent.terminate()
    agent.wait(20)
    await asyncio.to_thread(publish, port, devices, windows, 0.0)
    results: dict[tuple[str, int], float] = {}
    ready = asyncio.Event()
    collector = asyncio.create_task(collect_results(port, devices * windows, ready, results))
    await ready.wait()
    agent = start_agent(config, directory / "agent.log")
    try:
        first, last = await asyncio.wait_for(collector, 600)
    finally:
        agent.terminate()
        agent.wait(20)
    # The first result needs one window of every device; the rest arrive at the agent's pace.
    return (devices * windows * WINDOW - devices * WINDOW) / max(1e-9, last - first)


async def agent_latency(
    directory: Path, port: int, devices: int, windows: int, rate: float, run: int, max_wait_ms: float
) -> tuple[list[float], float]:
    """Sensor-to-decision latencies at a steady rate, and the agent's RSS at the end."""
    config = agent_config(directory, port, f"latency{run}-{max_wait_ms:g}", max_wait_ms=max_wait_ms)
    agent = start_agent(config, directory / "agent.log")
    try:
        results: dict[tuple[str, int], float] = {}
        ready = asyncio.Event()
        collector = asyncio.create_task(collect_results(port, devices * windows, ready, results))
        await ready.wait()
        sent = await asyncio.to_thread(publish, port, devices, windows, rate)
        await asyncio.wait_for(collector, 600)
        completing: dict[str, float] = sent["completing"]  # type: ignore[assignment]
        latencies = [results[(d, int(s))] - ts for key, ts in completing.items() for d, s in [key.split("/")]]
        return latencies, rss_mb(agent.pid)
    finally:
        agent.terminate()
        agent.wait(20)


async def cold_start(directory: Path, port: int, run: int) -> float:
    """Readings for one window wait at the broker; time from process start to the first decision."""
    config = agent_config(directory, port, f"cold{run}", max_wait_ms=0.0)
    agent = start_agent(config, directory / "agent.log")  # registers its persistent session
    agent.terminate()
    agent.wait(20)
    await asyncio.to_thread(publish, port, 1, 1, 0.0, WINDOW * 1000 * (run + 1))
    results: dict[tuple[str, int], float] = {}
    ready = asyncio.Event()
    collector = asyncio.create_task(collect_results(port, 1, ready, results))
    await ready.wait()
    started = time.time()
    agent = start_agent(config, directory / "agent.log")
    try:
        await asyncio.wait_for(collector, 60)
        # The decision's own timestamp (same clock): start_agent blocks this loop while it waits.
        return min(results.values()) - started
    finally:
        agent.terminate()
        agent.wait(20)


DEVICE_REQUIREMENTS = REPO / "requirements" / "edge-device.txt"
AARCH64 = [f"--platform=manylinux_2_{minor}_aarch64" for minor in (17, 27, 28)] + ["--platform=manylinux2014_aarch64"]


def edgefleet_wheel(directory: Path) -> Path:
    wheels = directory / "wheels"
    if not wheels.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)],
            check=True, capture_output=True,
        )  # fmt: skip
    return next(wheels.glob("edgefleet-*.whl"))


def install_arguments(install: str, wheel: Path) -> list[str]:
    """pip's arguments for an install: the `edge` extra as pip resolves it, or a device's install (the lock
    file and the edgefleet wheel, without their declared dependencies)."""
    if install == "extra":
        return [f"{wheel}[edge]"]
    return ["--no-deps", "-r", str(DEVICE_REQUIREMENTS), str(wheel)]


# The agent's imports and its model, run in a measured environment.
SMOKE = """
import sys
from pathlib import Path
import edgefleet.agent_service, edge_agent.agent, edge_agent.http, edge_agent.metrics, edge_agent.transport
from edge_agent.model import load_model
load_model(Path(sys.argv[1]))
"""


def installed_size_mb(directory: Path, install: str) -> tuple[float, list[tuple[str, float]]]:
    """Installed size of an install into a fresh virtual environment of this machine."""
    venv = directory / f"{install}-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", *install_arguments(install, edgefleet_wheel(directory))],
        check=True, capture_output=True,
    )  # fmt: skip
    # The measured environment runs the agent's imports and loads the model, or its figure means nothing.
    subprocess.run([python, "-c", SMOKE, str(MANIFEST)], check=True, cwd=directory)
    site = next((venv / "lib").glob("python3*/site-packages"))
    return site_size_mb(site)


def site_size_mb(site: Path) -> tuple[float, list[tuple[str, float]]]:
    """Total size of a site-packages folder and its five largest entries (pip and setuptools left out)."""
    # pip and setuptools come with every venv and are not part of what the agent needs.
    skip = {"pip", "setuptools", "_distutils_hack", "pkg_resources"}
    sizes: dict[str, float] = {}
    for entry in site.iterdir():
        name = entry.name.split("-")[0].removesuffix(".libs")
        if name in skip:
            continue
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        sizes[name] = sizes.get(name, 0.0) + sum(p.stat().st_size for p in files) / 1e6
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:5]
    return sum(sizes.values()), largest


def installed_size_aarch64_mb(directory: Path, install: str) -> tuple[float, list[tuple[str, float]]]:
    """An install as pip makes it on a 64-bit Raspberry Pi or a Jetson (manylinux aarch64 wheels)."""
    target = directory / f"{install}-aarch64"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "--only-binary=:all:",
         "--python-version=3.11", "--implementation=cp", *AARCH64,
         *install_arguments(install, edgefleet_wheel(directory))],
        check=True, capture_output=True,
    )  # fmt: skip
    return site_size_mb(target)


INSTALLS = {"extra": "`edge` extra", "device": "device install"}


def install_sizes(directory: Path) -> dict[tuple[str, str], tuple[float, list[tuple[str, float]]]]:
    """``{(install, arch): (MB, five largest)}`` for the `edge` extra and the device install."""
    sizes = {}
    for install in INSTALLS:
        console.print(f"  installed size: {INSTALLS[install]}, aarch64 and {platform.machine()}")
        sizes[(install, "aarch64")] = installed_size_aarch64_mb(directory, install)
        sizes[(install, platform.machine())] = installed_size_mb(directory, install)
    return sizes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Figures:
    throughput_agent: list[float]
    throughput_bare: list[float]
    p50_agent: list[float]
    p99_agent: list[float]
    p50_agent_batching: list[float]
    p50_bare: list[float]
    p99_bare: list[float]
    rss: list[float]
    cold: list[float]


def print_install_sizes(sizes: dict[tuple[str, str], tuple[float, list[tuple[str, float]]]]) -> None:
    """The device install against the goal, the `edge` extra beside it, and each one's largest entries."""
    table = Table(title="installed size (site-packages; pip and setuptools left out)")
    for column in ("install", "arch", "MB", "goal", "met"):
        table.add_column(column, justify="left" if column in ("install", "arch") else "right")
    for (install, arch), (total, _) in sizes.items():
        device = install == "device"
        met = "" if not device else ("yes" if total <= 150 else "[red]no[/]")
        table.add_row(INSTALLS[install], arch, f"{total:.1f}", "≤ 150" if device else "", met)
    console.print(table)
    for (install, arch), (_, largest) in sizes.items():
        console.print(f"largest, {INSTALLS[install]}, {arch}: " + ", ".join(f"{n} {mb:.1f} MB" for n, mb in largest))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--windows", type=int, default=40, help="windows per device in the throughput run")
    parser.add_argument("--latency-rate", type=float, default=500.0, help="readings/s in the latency run")
    sizes_only = parser.add_mutually_exclusive_group()
    sizes_only.add_argument("--skip-install-size", action="store_true")
    sizes_only.add_argument("--only-install-size", action="store_true", help="no broker, no agent runs")
    args = parser.parse_args()
    if args.only_install_size:
        with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
            print_install_sizes(install_sizes(Path(tmp)))
        return
    if shutil.which("mosquitto") is None:
        sys.exit("needs mosquitto on PATH (apt-get install mosquitto)")

    figures = Figures([], [], [], [], [], [], [], [], [])
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        directory = Path(tmp)
        broker, port = start_mosquitto(directory)
        try:
            for run in range(args.repeat):
                console.print(f"[bold]run {run + 1} of {args.repeat}[/]")
                console.print("  throughput: bare subscriber, then edge agent, each draining a backlog")
                figures.throughput_bare.append(bare_drain(port, args.devices, args.windows, run))
                figures.throughput_agent.append(await agent_drain(directory, port, args.devices, args.windows, run))
                console.print(f"  latency at {args.latency_rate:g} readings/s: bare hop, then edge agent")
                lat_bare = bare_latency(port, args.devices, 10, args.latency_rate, run)
                figures.p50_bare.append(percentile(lat_bare, 0.5))
                figures.p99_bare.append(percentile(lat_bare, 0.99))
                lat_agent, rss = await agent_latency(directory, port, args.devices, 10, args.latency_rate, run, 0.0)
                figures.p50_agent.append(percentile(lat_agent, 0.5))
                figures.p99_agent.append(percentile(lat_agent, 0.99))
                figures.rss.append(rss)
                batching, _ = await agent_latency(directory, port, args.devices, 10, args.latency_rate, run, 5.0)
                figures.p50_agent_batching.append(percentile(batching, 0.5))
                console.print("  cold start")
                figures.cold.append(await cold_start(directory, port, run))
        finally:
            broker.terminate()
            broker.wait()
        sizes = None if args.skip_install_size else install_sizes(directory)

    median = statistics.median
    table = Table(title=f"edge agent benchmark: medians of {args.repeat} runs ({args.devices} devices, one core)")
    for column in ("figure", "agent", "bare", "ratio", "goal", "met"):
        table.add_column(column, justify="left" if column == "figure" else "right")

    def row(name: str, agent: float, bare: float | None, ratio: float | None, goal: str, met: bool) -> None:
        table.add_row(
            name,
            f"{agent:,.1f}" if agent >= 10 else f"{agent:.3f}",
            "" if bare is None else (f"{bare:,.1f}" if bare >= 10 else f"{bare:.3f}"),
            "" if ratio is None else f"{ratio:.2f}",
            goal,
            "yes" if met else "[red]no[/]",
        )

    tput_a, tput_b = median(figures.throughput_agent), median(figures.throughput_bare)
    row("readings/s", tput_a, tput_b, tput_a / tput_b, "≥ 0.5× bare", tput_a / tput_b >= 0.5)
    p50_a, p50_b = median(figures.p50_agent) * 1000, median(figures.p50_bare) * 1000
    row("latency p50 (ms)", p50_a, p50_b, p50_a / p50_b, "≤ 3× bare", p50_a / p50_b <= 3)
    p99_a, p99_b = median(figures.p99_agent) * 1000, median(figures.p99_bare) * 1000
    row("latency p99 (ms)", p99_a, p99_b, p99_a / p99_b, "", True)
    p50_w = median(figures.p50_agent_batching) * 1000
    row("latency p50, max_wait_ms=5 (ms)", p50_w, p50_b, p50_w / p50_b, "(batching knob)", True)
    rss = median(figures.rss)
    row("RSS, one model (MB)", rss, None, None, "≤ 150", rss <= 150)
    cold = median(figures.cold)
    row("cold start to first decision (s)", cold, None, None, "≤ 2", cold <= 2)
    console.print(table)
    if sizes is not None:
        print_install_sizes(sizes)
    console.print(
        "runs: throughput agent "
        + ", ".join(f"{v:,.0f}" for v in figures.throughput_agent)
        + "; bare "
        + ", ".join(f"{v:,.0f}" for v in figures.throughput_bare)
    )


if __name__ == "__main__":
    asyncio.run(main())
