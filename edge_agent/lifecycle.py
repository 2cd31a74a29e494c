"""Model lifecycle: a new model goes live on probation; the previous one is kept, and comes back by
itself if the new one fails to run, fails too often, or agrees with the hub clearly less often.

Pure logic over the pipeline's counters; the agent applies what it decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.model import LoadedModel
from edge_agent.pipeline import AgentStats
from edge_agent.settings import AgentSettings

ModelKey = tuple[str, str]


def key_of(model: LoadedModel) -> ModelKey:
    return (model.manifest.name, model.manifest.version)


@dataclass(frozen=True, slots=True)
class Review:
    """What the keeper decided about a model on probation."""

    action: str  # "rollback" or "keep"
    reason: str


@dataclass(slots=True)
class Probation:
    candidate: LoadedModel
    previous: LoadedModel
    baseline_agreement: float | None


class ModelKeeper:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.probation: Probation | None = None
        self.previous: LoadedModel | None = None
        self.rollbacks = 0
        self.swaps = 0

    def start(self, candidate: LoadedModel, previous: LoadedModel, stats: AgentStats) -> None:
        self.probation = Probation(candidate, previous, stats.agreement_rate(key_of(previous)))
        self.previous = previous
        self.swaps += 1

    def review(self, stats: AgentStats) -> Review | None:
        """Called after each batch: ``None`` while undecided."""
        probation = self.probation
        if probation is None:
            return None
        settings = self.settings
        key = key_of(probation.candidate)
        windows = stats.windows_by_model[key]
        failures = stats.failures_by_model[key]
        attempts = windows + failures
        if attempts >= 10 and failures / attempts > settings.max_failure_rate:
            return self._end("rollback", f"inference failures {failures} of {attempts} windows")
        verdicts, agreements = stats.verdicts_by_model[key], stats.agreements_by_model[key]
        if probation.baseline_agreement is not None and verdicts >= settings.min_verdicts:
            rate = agreements / verdicts
            if rate < probation.baseline_agreement - settings.max_agreement_drop:
                return self._end(
                    "rollback",
                    f"agrees with the hub on {rate:.0%} of {verdicts} verdicts, "
                    f"the previous model on {probation.baseline_agreement:.0%}",
                )
        if windows >= settings.probation_windows:
            return self._end("keep", f"{windows} windows without a reason to roll back")
        return None

    def _end(self, action: str, reason: str) -> Review:
        self.probation = None
        if action == "rollback":
            self.rollbacks += 1
        return Review(action, reason)
