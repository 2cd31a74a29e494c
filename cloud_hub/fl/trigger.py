"""When a federated round is due: on a schedule, or when the fleet's edge models drift from the hub's verdicts.

Sans I/O: feed it the verdicts as they come (did the edge model agree with the hub's full model?) and
ask it, with the current time, whether a round is due; the caller starts the run (``flwr run`` through
:class:`cloud_hub.fl.deployment.LoopbackDeployment.submit`, or ``edgefleet fl start``) and reports it.
Drift is the agreement rate over the last ``window`` verdicts falling below ``min_agreement``, or a drift the
hub's :class:`cloud_hub.drift.DriftMonitor` found (its retraining triggers, handed over with
:meth:`RoundTrigger.report_drift`); a cooldown keeps a drifting fleet from starting round after round before
the new model has rolled out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from cloud_hub.fl.errors import SettingsError

Reason = Literal["schedule", "drift"]


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    interval_s: float | None = 24 * 3600.0
    """Start a round this long after the last one; None: never on schedule."""
    min_agreement: float | None = 0.85
    """Start a round when edge/hub agreement over the window falls below this; None: never on drift."""
    window: int = 200
    cooldown_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.interval_s is not None and self.interval_s <= 0:
            raise SettingsError("a round interval is positive")
        if self.min_agreement is not None and not 0.0 < self.min_agreement <= 1.0:
            raise SettingsError("a minimum agreement lies in (0, 1]")
        if self.window < 1 or self.cooldown_s < 0:
            raise SettingsError("a drift window holds at least one verdict; a cooldown is not negative")


class RoundTrigger:
    def __init__(self, settings: TriggerSettings, *, last_round_at: float) -> None:
        self.settings = settings
        self.last_round_at = last_round_at
        self._agreements: deque[bool] = deque(maxlen=settings.window)
        self._reported = False

    def observe(self, *, agreed: bool) -> None:
        """One verdict: whether the device's edge model had decided as the hub's model did."""
        self._agreements.append(agreed)

    def report_drift(self) -> None:
        """A drift found elsewhere (the hub's drift monitor): start a round once the cooldown allows."""
        self._reported = True

    @property
    def agreement(self) -> float | None:
        """Agreement over the window, once the window is full."""
        if len(self._agreements) < self.settings.window:
            return None
        return sum(self._agreements) / len(self._agreements)

    def due(self, now: float) -> Reason | None:
        """Why a round should start now, or None."""
        since = now - self.last_round_at
        if since < self.settings.cooldown_s:
            return None
        if self._reported:
            return "drift"
        agreement = self.agreement
        if (
            self.settings.min_agreement is not None
            and agreement is not None
            and agreement < self.settings.min_agreement
        ):
            return "drift"
        if self.settings.interval_s is not None and since >= self.settings.interval_s:
            return "schedule"
        return None

    def started(self, now: float) -> None:
        """A round started: restart the schedule and judge drift on fresh verdicts only."""
        self.last_round_at = now
        self._agreements.clear()
        self._reported = False
