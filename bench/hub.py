"""Benchmark of the hub's adjudication: escalations judged per second with dynamic batching against
without, and latency at half the saturation rate, on SQLite and on PostgreSQL.

    python bench/hub.py [--repeat 3] [--escalations 2000] [--max-batch 64] [--max-wait-ms 5] [--no-postgres]

The full path each escalation takes in the hub (:class:`cloud_hub.adjudication.Adjudicator`): look-up of
a stored verdict, the full cloud model (models/quantized/italy_power_cloud_fp32, ONNX Runtime, one
thread), and storage of the event with its verdict, device and agreement statistics. "Without
batching" is the same path with ``max_batch=1``: one look-up, one model run and one transaction per
escalation. Figures, each the median of the repeats, measured side by side in one run:

- saturation: escalations/s with 256 concurrent submitters (closed loop);
- latency: p50/p99 of submit-to-verdict under open-loop Poisson arrivals at half of that mode's
  saturation rate;
- for context, the model alone: windows/s at batch 1 and at ``max-batch``.

PostgreSQL is the one at 127.0.0.1:5432, database ``test`` (``EDGEFLEET_TEST_POSTGRES_URL``), in a
schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from cloud_hub.adjudication import Adjudicator, Judge  # noqa: E402
from cloud_hub.store import Store  # noqa: E402
from protocol.messages import Escalation, EscalationReason, Outcome, SensorKind, Window  # noqa: E402

MANIFEST = REPO / "models" / "quantized" / "italy_power_cloud_fp32.manifest.json"
POSTGRES_URL = os.environ.get("EDGEFLEET_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SUBMITTERS = 256
LATENCY_SECONDS = 4.0
console = Console(width=160)


def escalations(count: int, *, devices: int = 50, seed: int = 0) -> list[Escalation]:
    """Daily-profile-like windows (two humps and noise) from ``devices`` devices."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24)
    made = []
    start = time.time()
    for index in range(count):
        profile = (
            1.0 + 0.5 * np.sin((hours - 7) / 24 * 2 * np.pi) + 0.3 * np.exp(-((hours - rng.uniform(17, 20)) ** 2) / 4)
        )
        values = profile * rng.uniform(800, 1200) + rng.normal(0, 30, 24)
        confidence = float(rng.uniform(0.5, 0.7))
        made.append(
            Escalation(
                device_id=f"meter-{index % devices:03d}",
                timestamp=start + index * 0.001,
                site="bench",
                window=Window(
                    stream="power", sensor=SensorKind.POWER, unit="kW", start_seq=24 * index, values=values.tolist()
                ),
                edge=Outcome(
                    model="italy_power_edge_int8",
                    model_version="1.0.0",
                    label="winter" if index % 2 else "summer",
                    confidence=confidence,
                    anomaly_score=float(rng.uniform(0, 1)),
                    probabilities=[confidence, 1 - confidence],
                ),
                reasons=[EscalationReason.LOW_CONFIDENCE],
            )
        )
    return made


@dataclass
class Backend:
    name: str
    open: Callable[[], Store]
    cleanup: Callable[[], None]


class PostgresSchemas:
    """Each store in a fresh schema, all dropped at the end."""

    def __init__(self) -> None:
        self.schemas: list[str] = []

    async def create(self) -> str:
        schema = f"hub_bench_{secrets.token_hex(6)}"
        engine = create_async_engine(POSTGRES_URL)
        async with engine.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await engine.dispose()
        self.schemas.append(schema)
        return schema

    async def drop_all(self) -> None:
        engine = create_async_engine(POSTGRES_URL)
        async with engine.begin() as connection:
            for schema in self.schemas:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()


async def fresh_store(backend: str, directory: Path, schemas: PostgresSchemas) -> Store:
    if backend == "sqlite":
        store = Store.open(f"sqlite+aiosqlite:///{directory / f'hub-{secrets.token_hex(4)}.db'}")
    else:
        schema = await schemas.create()
        store = Store.open(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    await store.init_schema()
    return store


async def saturation(
    judge: Judge, store: Store, items: list[Escalation], *, max_batch: int, max_wait_ms: float
) -> tuple[float, float]:
    """Escalations/s with SUBMITTERS concurrent callers, and the mean batch size."""
    queue = list(reversed(items))
    async with Adjudicator(
        judge, store, max_batch=max_batch, max_wait_ms=max_wait_ms, max_pending=4 * SUBMITTERS
    ) as adjudicator:

        async def submitter() -> None:
            while queue:
                await adjudicator.adjudicate(queue.pop())

        start = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        elapsed = time.perf_counter() - start
        mean_batch = adjudicator.stats.judged / max(1, adjudicator.stats.batches)
    return len(items) / elapsed, mean_batch


async def latency(
    judge: Judge, store: Store, items: list[Escalation], *, rate: float, max_batch: int, max_wait_ms: float
) -> tuple[float, float, int]:
    """p50 and p99 submit-to-verdict latency (ms) under Poisson arrivals at ``rate``/s."""
    rng = random.Random(1)
    latencies: list[float] = []
    async with Adjudicator(
        judge, store, max_batch=max_batch, max_wait_ms=max_wait_ms, max_pending=100_000
    ) as adjudicator:

        async def one(escalation: Escalation) -> None:
            start = time.perf_counter()
            await adjudicator.adjudicate(escalation)
            latencies.append((time.perf_counter() - start) * 1000.0)

        loop = asyncio.get_running_loop()
        tasks = []
        began = loop.time()
        next_at = began
        index = 0
        while loop.time() - began < LATENCY_SECONDS and index < len(items):
            next_at += rng.expovariate(rate)
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(items[index])))
            index += 1
        await asyncio.gather(*tasks)
    latencies.sort()
    return statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], len(latencies)


def model_alone(judge: Judge, items: list[Escalation], batch: int) -> float:
    start = time.perf_counter()
    for offset in range(0, len(items), batch):
        judge.judge(items[offset : offset + batch])
    return len(items) / (time.perf_counter() - start)


@dataclass
class Figures:
    throughput: float
    mean_batch: float
    p50_ms: float
    p99_ms: float
    latency_samples: int


async def measure(
    backend: str, judge: Judge, directory: Path, schemas: PostgresSchemas, args: argparse.Namespace, *, batched: bool
) -> Figures:
    max_batch = args.max_batch if batched else 1
    max_wait_ms = args.max_wait_ms if batched else 0.0
    count = args.escalations if batched else max(200, args.escalations // 4)
    rates, batches = [], []
    for repeat in range(args.repeat):
        store = await fresh_store(backend, directory, schemas)
        try:
            rate, mean_batch = await saturation(
                judge, store, escalations(count, seed=repeat), max_batch=max_batch, max_wait_ms=max_wait_ms
            )
        finally:
            await store.close()
        rates.append(rate)
        batches.append(mean_batch)
    saturated = statistics.median(rates)
    p50s, p99s, samples = [], [], 0
    for repeat in range(args.repeat):
        store = await fresh_store(backend, directory, schemas)
        try:
            items = escalations(int(saturated * 0.5 * LATENCY_SECONDS) + 10, seed=100 + repeat)
            p50, p99, samples = await latency(
                judge, store, items, rate=saturated * 0.5, max_batch=max_batch, max_wait_ms=max_wait_ms
            )
        finally:
            await store.close()
        p50s.append(p50)
        p99s.append(p99)
    return Figures(saturated, statistics.median(batches), statistics.median(p50s), statistics.median(p99s), samples)


async def main(args: argparse.Namespace) -> int:
    judge = Judge.load(MANIFEST, threads=1)
    backends = ["sqlite"] if args.no_postgres else ["sqlite", "postgresql"]
    sample = escalations(2048, seed=7)
    alone_single = statistics.median(model_alone(judge, sample[:512], 1) for _ in range(args.repeat))
    alone_batched = statistics.median(model_alone(judge, sample, args.max_batch) for _ in range(args.repeat))

    table = Table(title=f"hub adjudication: {judge.manifest.name} {judge.manifest.version}, median of {args.repeat}")
    for column in (
        "backend",
        "mode",
        "escalations/s",
        "mean batch",
        "p50 ms @ ½ sat.",
        "p99 ms @ ½ sat.",
        "batched ÷ unbatched",
    ):
        table.add_column(column, justify="right" if column not in ("backend", "mode") else "left")
    schemas = PostgresSchemas()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        try:
            for backend in backends:
                console.print(f"[dim]measuring {backend}…[/dim]")
                single = await measure(backend, judge, Path(tmp), schemas, args, batched=False)
                batched = await measure(backend, judge, Path(tmp), schemas, args, batched=True)
                ratio = batched.throughput / single.throughput
                table.add_row(
                    backend,
                    "max_batch=1",
                    f"{single.throughput:,.0f}",
                    f"{single.mean_batch:.1f}",
                    f"{single.p50_ms:.1f}",
                    f"{single.p99_ms:.1f}",
                    "",
                )
                table.add_row(
                    backend,
                    f"max_batch={args.max_batch}, max_wait={args.max_wait_ms:g} ms",
                    f"{batched.throughput:,.0f}",
                    f"{batched.mean_batch:.1f}",
                    f"{batched.p50_ms:.1f}",
                    f"{batched.p99_ms:.1f}",
                    f"{ratio:.1f}× (goal ≥ 5×)",
                )
        finally:
            if not args.no_postgres:
                await schemas.drop_all()
    table.add_row(
        "model alone",
        "batch 1 → batch " + str(args.max_batch),
        f"{alone_single:,.0f} → {alone_batched:,.0f}",
        "",
        "",
        "",
        f"{alone_batched / alone_single:.1f}×",
    )
    console.print(table)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--escalations", type=int, default=2000, help="Per saturation run with batching.")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-postgres", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))
