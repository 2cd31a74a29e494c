"""Prometheus metrics of one hub: requests, adjudications, batch sizes, queue depth, rollout states.

Each app has a registry of its own (several apps in one process, as in tests, do not collide);
``GET /metrics`` serves it in the text exposition format.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgefleet_hub_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "edgefleet_hub_request_seconds",
            "HTTP request duration by route template.",
            ["route"],
            registry=self.registry,
        )
        self.adjudications = Counter(
            "edgefleet_hub_adjudications",
            "Escalations answered, by result: judged (new), duplicate (answered with the stored verdict), failed.",
            ["result", "via"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "edgefleet_hub_batch_size",
            "Escalations per adjudication batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "edgefleet_hub_batch_seconds",
            "Duration of an adjudication batch (look-up, inference, storage).",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "edgefleet_hub_queue_depth", "Escalations waiting for an adjudication batch.", registry=self.registry
        )
        self.rollouts = Gauge(
            "edgefleet_hub_rollouts", "Rollouts by state (refreshed as they move).", ["state"], registry=self.registry
        )
        self.rollout_transitions = Counter(
            "edgefleet_hub_rollout_transitions",
            "Rollout transitions by target state.",
            ["state"],
            registry=self.registry,
        )
        self.drift_alerts = Counter(
            "edgefleet_hub_drift_alerts", "Drift alerts raised, by metric.", ["metric"], registry=self.registry
        )
        self.rate_limited = Counter(
            "edgefleet_hub_rate_limited", "Requests refused with 429 (a token over its rate).", registry=self.registry
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))

    def set_rollouts(self, by_state: dict[str, int], states: list[str]) -> None:
        for state in states:
            self.rollouts.labels(state=state).set(by_state.get(state, 0))
