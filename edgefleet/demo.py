"""``edgefleet demo``: the whole loop on embedded defaults, for a bounded time, with a live table.

broker (Mosquitto or in-process) → simulated smart meters → one edge agent per meter (int8 model,
ONNX Runtime) → escalations → hub (full fp32 model, SQLite) → verdicts back to the agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from cloud_hub.server import HubServer
from cloud_hub.settings import HubSettings
from edge_agent.agent import EdgeAgent
from edge_agent.model import LoadedModel, load_model
from edge_agent.settings import AgentSettings
from edge_agent.transport import mqtt_connector
from edgefleet.broker import BrokerChoice, RunningBroker, embedded_broker
from edgefleet.logs import configure
from firmware_sim.faults import FaultKind
from firmware_sim.fleet import Fleet
from firmware_sim.settings import SimSettings
from protocol.broker import BrokerSettings
from protocol.codec import decode
from protocol.errors import ProtocolError
from protocol.messages import InferenceResult
from protocol.topics import Kind, topic_filter

log = logging.getLogger("edgefleet.demo")

SITE = "demo-site"
EDGE_MANIFEST = "italy_power_edge_int8.manifest.json"
CLOUD_MANIFEST = "italy_power_cloud_fp32.manifest.json"
DEMO_TOKEN = "efh_" + secrets.token_urlsafe(32)
"""The demo hub's admin token: made afresh per run, good only while the demo runs."""


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 30.0
    devices: int = 5
    rate_hz: float = 8.0
    broker: BrokerChoice = "auto"
    malformed_probability: float = 0.01
    workdir: Path = Path("var/demo")
    live: bool = True
    seed: int = 0
    models_dir: Path = Path("models/quantized")


@dataclass
class GroundTruthScore:
    """Edge decisions compared with the simulator's true day labels (read from the inference topic)."""

    results: int = 0
    correct: int = 0
    by_device: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class DemoReport:
    broker: str
    checks: list[Check]
    totals: dict[str, int]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


async def run_demo(options: DemoOptions, console: Console | None = None) -> DemoReport:
    """Run the loop; the report's checks say whether it held everywhere."""
    console = console or Console()
    edge_manifest = options.models_dir / EDGE_MANIFEST
    cloud_manifest = options.models_dir / CLOUD_MANIFEST
    if options.workdir.exists():
        shutil.rmtree(options.workdir)
    options.workdir.mkdir(parents=True)
    configure("INFO", file=options.workdir / "demo.log")
    model = load_model(edge_manifest)

    async with embedded_broker(options.broker) as broker:
        console.print(f"broker: {broker.kind} on {broker.host}:{broker.port}")
        broker_settings = BrokerSettings(host=broker.host, port=broker.port)
        hub_settings = HubSettings(
            database_url=f"sqlite+aiosqlite:///{options.workdir / 'hub.db'}",
            broker=broker_settings,
            share_group="hub" if broker.shared_subscriptions else None,
            model_manifest=cloud_manifest,
            port=0,
            demo_mode=True,
            admin_token=SecretStr(DEMO_TOKEN),
        )
        async with HubServer(hub_settings) as hub:
            console.print(f"hub: {hub.base_url} (SQLite at {options.workdir / 'hub.db'})")
            return await _run_fleet(options, console, broker, broker_settings, model, edge_manifest, hub)


async def _run_fleet(
    options: DemoOptions,
    console: Console,
    broker: RunningBroker,
    broker_settings: BrokerSettings,
    model: LoadedModel,
    edge_manifest: Path,
    hub: HubServer,
) -> DemoReport:
    sim_settings = SimSettings(
        site=SITE,
        devices=options.devices,
        broker=broker_settings,
        rate_hz=options.rate_hz,
        seed=options.seed,
        malformed_probability=options.malformed_probability,
        health_interval_s=5.0,
        ground_truth=options.workdir / "faults.jsonl",
    )
    # Garbled sends go next to the valid readings: the agents must refuse them, yet every day stays
    # whole, so the edge model's windows (aligned on seq) are all decided and scored.
    implicit = sim_settings.implicit_scenario()
    faults = [
        fault.model_copy(update={"alongside": True}) if fault.kind is FaultKind.MALFORMED else fault
        for fault in implicit.faults
    ]
    fleet = Fleet(sim_settings, implicit.model_copy(update={"faults": faults}))
    score = GroundTruthScore()
    async with contextlib.AsyncExitStack() as stack:
        agents: list[EdgeAgent] = []
        for device in fleet.device_ids():
            settings = AgentSettings(
                site=SITE,
                devices=[device],
                broker=broker_settings,
                model_manifest=edge_manifest,
                outbox_path=options.workdir / "outbox" / f"{device}.db",
            )
            connect = mqtt_connector(broker_settings, client_id=f"agent-{device}")
            agents.append(await stack.enter_async_context(EdgeAgent(settings, model=model, connect=connect)))
        async with asyncio.timeout(10):
            for agent in agents:
                await agent.connected.wait()
        observer = asyncio.create_task(_observe_results(broker_settings, fleet, score))
        stack.callback(observer.cancel)

        stop = asyncio.Event()
        fleet_task = asyncio.create_task(fleet.run(stop))
        started = time.monotonic()
        live = Live(console=console, refresh_per_second=4, transient=False) if options.live else None
        with live if live is not None else contextlib.nullcontext():
            while (elapsed := time.monotonic() - started) < options.duration_s:
                if live is not None:
                    live.update(_table(fleet, agents, score, elapsed, options.duration_s))
                await asyncio.sleep(0.25)
            stop.set()
            await fleet_task
            # Let the last windows be decided and their verdicts come back.
            async with asyncio.timeout(15):
                while any(agent.pipeline.ledger.open or agent.queued or agent.pipeline.pending for agent in agents):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            if live is not None:
                live.update(_table(fleet, agents, score, time.monotonic() - started, options.duration_s))

        admin = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10, headers=admin) as client:
            stats = (await client.get("/api/v1/stats")).json()
            devices = (await client.get("/api/v1/devices", params={"limit": 1000})).json()
    checks = _checks(fleet, agents, stats, devices, score)
    _summary(console, broker, fleet, agents, stats, score, checks)
    totals = fleet.totals()
    return DemoReport(
        broker=broker.kind,
        checks=checks,
        totals={
            "published": totals.published,
            "malformed": totals.malformed,
            "readings": sum(a.stats.readings for a in agents),
            "rejected": sum(a.stats.rejections for a in agents),
            "decisions": sum(a.stats.windows for a in agents),
            "escalations": sum(a.stats.escalations for a in agents),
            "verdicts": sum(a.stats.verdicts for a in agents),
            "agreements": sum(a.stats.agreements for a in agents),
            "stored_escalations": int(stats.get("escalations", 0)),
            "scored": score.results,
            "correct": score.correct,
        },
    )


async def _observe_results(broker: BrokerSettings, fleet: Fleet, score: GroundTruthScore) -> None:
    """Subscribe to the agents' inference results, as a site dashboard would, and score them."""
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port, identifier="demo-observer") as client:
        await client.subscribe(topic_filter(Kind.INFERENCE, site=SITE), qos=0)
        async for message in client.messages:
            try:
                result = decode(bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b"")
            except ProtocolError:
                continue
            if not isinstance(result, InferenceResult):
                continue
            truth = fleet.day_label(result.device_id, result.window_start_seq)
            if truth is None:
                continue
            score.results += 1
            if truth == result.outcome.label:
                score.correct += 1
                score.by_device[result.device_id] += 1


def _table(fleet: Fleet, agents: list[EdgeAgent], score: GroundTruthScore, elapsed: float, duration: float) -> Group:
    table = Table(title=f"EdgeFleet demo: {min(elapsed, duration):.0f} s of {duration:.0f} s", expand=False)
    table.add_column("device", no_wrap=True)
    for column in ("sent", "received", "rejected", "decided", "escalated", "verdicts", "agree"):
        table.add_column(column, justify="right")
    for device, agent in zip(fleet.devices, agents, strict=True):
        stats = agent.stats
        table.add_row(
            device.device_id,
            str(device.counters.telemetry_published),
            str(stats.telemetry_messages),
            str(stats.rejections),
            str(stats.windows),
            str(stats.escalations),
            str(stats.verdicts),
            str(stats.agreements),
        )
    totals = Table.grid(padding=(0, 2))
    totals.add_row(
        f"decisions {sum(a.stats.windows for a in agents)}",
        f"escalations {sum(a.stats.escalations for a in agents)}",
        f"verdicts {sum(a.stats.verdicts for a in agents)}",
        f"edge right {score.correct}/{score.results}",
    )
    return Group(table, totals)


def _checks(
    fleet: Fleet, agents: list[EdgeAgent], stats: dict[str, object], devices: object, score: GroundTruthScore
) -> list[Check]:
    totals = fleet.totals()
    received = sum(a.stats.telemetry_messages for a in agents)
    decisions = sum(a.stats.windows for a in agents)
    escalations = sum(a.stats.escalations for a in agents)
    verdicts = sum(a.stats.verdicts for a in agents)
    stored = int(stats.get("escalations", 0))  # type: ignore[call-overload]
    registered = int(devices["total"]) if isinstance(devices, dict) else 0
    return [
        Check("simulator published", totals.published > 0, f"{totals.published} messages"),
        Check("agents received every message", received == totals.published, f"{received} of {totals.published}"),
        Check("agents decided locally", decisions > 0, f"{decisions} windows"),
        Check("agents escalated", escalations > 0, f"{escalations} escalations"),
        Check("every escalation got a verdict", verdicts == escalations, f"{verdicts} of {escalations}"),
        Check("hub stored every escalation once", stored == escalations, f"{stored} stored, {escalations} sent"),
        Check("hub registered every device", registered == totals.devices, f"{registered} of {totals.devices}"),
    ]


def _summary(
    console: Console,
    broker: RunningBroker,
    fleet: Fleet,
    agents: list[EdgeAgent],
    stats: dict[str, object],
    score: GroundTruthScore,
    checks: list[Check],
) -> None:
    totals = fleet.totals()
    readings = sum(a.stats.readings for a in agents)
    decisions = sum(a.stats.windows for a in agents)
    escalations = sum(a.stats.escalations for a in agents)
    verdicts = sum(a.stats.verdicts for a in agents)
    agree = sum(a.stats.agreements for a in agents)
    rejected: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for agent in agents:
        rejected.update(agent.stats.rejected)
        rules.update(agent.stats.rules)
    accuracy = f"{score.correct / score.results:.1%}" if score.results else "n/a"
    console.print()
    console.print("[bold]Summary[/]")
    console.print(f"  broker                {broker.kind}")
    console.print(f"  devices               {totals.devices} simulated, {len(agents)} edge agents")
    console.print(f"  readings              {totals.published} sent, {readings} received by agents")
    reasons = ", ".join(f"{k} {v}" for k, v in rejected.items()) or "none"
    console.print(
        f"  rejected readings     {sum(rejected.values())} ({reasons}); garbled by the simulator: {totals.malformed}"
    )
    console.print(f"  local decisions       {decisions} (rules: {', '.join(f'{k} {v}' for k, v in rules.items())})")
    console.print(f"  edge accuracy         {accuracy} against the simulator's true labels ({score.results} windows)")
    console.print(f"  escalations           {escalations}")
    console.print(f"  verdicts              {verdicts} received, {agree} agree with the edge")
    console.print(
        f"  events stored         {stats.get('escalations')} escalations, {stats.get('events')} events in all"
    )
    console.print(f"  injected faults       {totals.faults}")
    for check in checks:
        mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {check.name}: {check.detail}")
