"""Prometheus metrics and a health document, read from the agent's state when scraped.

Nothing here runs on the hot path: the pipeline keeps plain counters and histograms, and the
collector turns them into metric families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from edge_agent.pipeline import Histogram

if TYPE_CHECKING:
    from edge_agent.agent import EdgeAgent

PREFIX = "edgefleet_agent"


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", histogram.count))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


class AgentCollector(Collector):
    def __init__(self, agent: EdgeAgent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Any]:
        agent = self._agent
        stats = agent.stats
        manifest = agent.pipeline.model.manifest
        backend = agent.pipeline.model.backend.name

        def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)

        yield counter("messages", "Messages received on subscribed topics.", stats.messages)
        yield counter(
            "readings", "Sensor readings accepted or rejected (values of batches count one each).", stats.readings
        )
        rejections = CounterMetricFamily(f"{PREFIX}_rejections", "Inputs rejected, by reason.", labels=["reason"])
        for reason, count in sorted(stats.rejected.items()):
            rejections.add_metric([reason], count)
        yield rejections
        inferences = CounterMetricFamily(
            f"{PREFIX}_inferences", "Windows inferred, by model and backend.", labels=["model", "version", "backend"]
        )
        for (model, version, backend_name), count in sorted(stats.inferences.items()):
            inferences.add_metric([model, version, backend_name], count)
        yield inferences
        yield counter("inference_failures", "Windows whose batch failed to run.", stats.inference_failures)
        yield counter("batches", "Inference batches run.", stats.batches)
        decisions = CounterMetricFamily(f"{PREFIX}_decisions", "Local decisions, by label.", labels=["label"])
        for label, count in sorted(stats.decisions.items()):
            decisions.add_metric([label], count)
        yield decisions
        rules = CounterMetricFamily(
            f"{PREFIX}_escalation_rules", "Decisions by the rule that decided them.", labels=["rule"]
        )
        for rule, count in sorted(stats.rules.items()):
            rules.add_metric([rule], count)
        yield rules
        yield counter("escalations", "Windows escalated to the hub.", stats.escalations)
        feeds = CounterMetricFamily(
            f"{PREFIX}_feed_items",
            "What local sources read, gated and inferred: frames (read, inferred, gated_still, gated_cooldown, "
            "skipped_pace) and audio (blocks, samples, windows, inferred, gated_quiet).",
            labels=["source", "outcome"],
        )
        for source, counts in sorted(stats.feeds.items()):
            for outcome, count in sorted(counts.items()):
                feeds.add_metric([source, outcome], count)
        yield feeds
        verdicts = CounterMetricFamily(f"{PREFIX}_verdicts", "Verdicts received, by agreement.", labels=["agrees"])
        verdicts.add_metric(["true"], stats.agreements)
        verdicts.add_metric(["false"], stats.verdicts - stats.agreements)
        yield verdicts
        yield _histogram(f"{PREFIX}_inference_seconds", "Time to run one inference batch.", stats.inference_seconds)
        yield _histogram(
            f"{PREFIX}_decision_seconds",
            "From the reading completing a window to its decision.",
            stats.decision_seconds,
        )
        depth = GaugeMetricFamily(
            f"{PREFIX}_outbox_depth",
            "Messages in the outbox: not sent yet, or sent and awaiting a reply.",
            labels=["state"],
        )
        unsent = agent.outbox.unsent()
        depth.add_metric(["unsent"], unsent)
        depth.add_metric(["awaiting_reply"], agent.outbox.depth - unsent)
        yield depth
        stored = agent.outbox.counters()
        yield counter("outbox_delivered", "Messages the broker acknowledged.", stored.get("delivered", 0))
        dropped = CounterMetricFamily(
            f"{PREFIX}_outbox_dropped", "Messages dropped from a full outbox, by priority.", labels=["priority"]
        )
        for name, count in sorted(stored.items()):
            if name.startswith("dropped.p"):
                dropped.add_metric([name.removeprefix("dropped.p")], count)
        yield dropped
        yield counter("reconnects", "Broker connections lost and retried.", agent.reconnects)
        connected = GaugeMetricFamily(f"{PREFIX}_connected", "Whether a broker link is up.", labels=["link"])
        connected.add_metric(["feed"], float(agent.connected.is_set()))
        connected.add_metric(["uplink"], float(agent.uplink_connected.is_set()))
        yield connected
        info = InfoMetricFamily(f"{PREFIX}_model", "The model in use.")
        info.add_metric(
            [], {"name": manifest.name, "version": manifest.version, "backend": backend, "sha256": manifest.sha256}
        )
        yield info


def registry_for(agent: EdgeAgent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def health(agent: EdgeAgent) -> tuple[bool, dict[str, object]]:
    """Healthy while the sensor feed is connected and a model is loaded; the document says the rest."""
    manifest = agent.pipeline.model.manifest
    document: dict[str, object] = {
        "status": "ok" if agent.connected.is_set() else "degraded",
        "feed_connected": agent.connected.is_set(),
        "uplink_connected": agent.uplink_connected.is_set(),
        "outbox_depth": agent.outbox.depth,
        "model": {"name": manifest.name, "version": manifest.version, "backend": agent.pipeline.model.backend.name},
        "windows": agent.stats.windows,
        "escalations": agent.stats.escalations,
        "rejections": agent.stats.rejections,
        "feeds": {
            feed.name: {"kind": feed.kind, "model": feed.model.manifest.name, **feed.counts} for feed in agent.feeds
        },
    }
    return agent.connected.is_set(), document
