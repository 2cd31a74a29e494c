"""Drift detection: has what a device group's edge model sees moved away from what it saw at first?

Per device group and edge model version, four metrics of every judged escalation are watched: the
edge's confidence and anomaly score, and the escalated window's mean and standard deviation (the
input statistics). The reference of a metric is its first ``reference_size`` observations (kept in
``drift_references`` once there are that many); the model manifests carry summary figures (medians)
rather than distributions, so the fleet's own first observations make the reference. The live
sample is the newest ``window`` observations after the reference.

Two tests, and a metric has drifted only when both agree (fewer false alarms on small samples):

- **PSI** (population stability index) over bins at the reference's deciles and range edges:
  ``Σ (live% − ref%) · ln(live% / ref%)``; above ``psi_threshold`` (0.25 by convention) is a shift.
- **KS**, the two-sample Kolmogorov-Smirnov statistic, with its asymptotic p-value below ``ks_alpha``.

A drift stores a ``drift_alerts`` row, counts it, and opens one ``retraining_triggers`` row for the
group and model (unless one is open already), which the federated-learning coordinator consumes
(:meth:`DriftMonitor.take_trigger` or ``POST /api/v1/drift/triggers/{id}/consume``). Listeners
registered with :meth:`DriftMonitor.on_drift` hear of each alert and trigger. The same metric of the
same key raises again only after another full window of observations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select, update

from cloud_hub.errors import ConflictError, NotFoundError
from cloud_hub.log import log_event
from cloud_hub.store import (
    AgreementStat,
    Device,
    DriftAlert,
    DriftReference,
    Event,
    EventKind,
    Page,
    RetrainingTrigger,
    Store,
    page_of,
    utc_now,
)

logger = logging.getLogger("edgefleet.hub.drift")

METRICS: dict[str, str] = {
    "edge_confidence": "edge_confidence",
    "edge_anomaly_score": "edge_anomaly_score",
    "input_mean": "input_mean",
    "input_std": "input_std",
}
"""Metric name → column of ``events``."""

_FLOOR = 1e-4  # an empty bin counts as this share, so that the logarithm stays finite


def psi(reference: npt.ArrayLike, live: npt.ArrayLike, *, bins: int = 10) -> float:
    """Population stability index of ``live`` against ``reference``, over bins at the reference's quantiles."""
    ref = np.asarray(reference, dtype=np.float64)
    now = np.asarray(live, dtype=np.float64)
    if ref.size == 0 or now.size == 0:
        raise ValueError("PSI needs two non-empty samples")
    # Deciles of the reference, plus its range: live values below or above anything seen fall in bins of their own.
    quantiles = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    inner = np.unique(np.concatenate((quantiles, [ref.min(), np.nextafter(ref.max(), np.inf)])))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    expected = np.maximum(np.histogram(ref, edges)[0] / ref.size, _FLOOR)
    actual = np.maximum(np.histogram(now, edges)[0] / now.size, _FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_2samp(reference: npt.ArrayLike, live: npt.ArrayLike) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value (Stephens' correction)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    now = np.sort(np.asarray(live, dtype=np.float64))
    if ref.size == 0 or now.size == 0:
        raise ValueError("KS needs two non-empty samples")
    points = np.concatenate((ref, now))
    cdf_ref = np.searchsorted(ref, points, side="right") / ref.size
    cdf_now = np.searchsorted(now, points, side="right") / now.size
    statistic = float(np.max(np.abs(cdf_ref - cdf_now)))
    effective = ref.size * now.size / (ref.size + now.size)
    root = math.sqrt(effective)
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 1e-3:
        return statistic, 1.0
    terms = [(-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101)]
    return statistic, float(min(1.0, max(0.0, 2.0 * sum(terms))))


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """One metric of one key, compared."""

    device_group: str
    model: str
    model_version: str
    metric: str
    psi: float
    ks: float
    ks_p_value: float
    drifted: bool


@dataclass
class DriftReport:
    checked: list[MetricCheck] = field(default_factory=list)
    alerts: list[DriftAlert] = field(default_factory=list)
    triggers: list[RetrainingTrigger] = field(default_factory=list)


DriftListener = Callable[[DriftAlert, RetrainingTrigger | None], None]


class DriftMonitor:
    """Checks every (group, model, version) the hub has verdicts for; see the module's docstring."""

    def __init__(
        self,
        store: Store,
        *,
        reference_size: int = 200,
        window: int = 200,
        psi_threshold: float = 0.25,
        ks_alpha: float = 0.01,
    ) -> None:
        self._store = store
        self._reference_size = reference_size
        self._window = window
        self._psi_threshold = psi_threshold
        self._ks_alpha = ks_alpha
        self._listeners: list[DriftListener] = []
        self.alerts_raised = 0

    def on_drift(self, listener: DriftListener) -> None:
        """Call ``listener(alert, trigger)`` for every alert (``trigger`` is ``None`` if one was open already)."""
        self._listeners.append(listener)

    async def check(self) -> DriftReport:
        report = DriftReport()
        async with self._store.transaction("list drift keys") as session:
            keys = list(
                await session.execute(
                    select(AgreementStat.device_group, AgreementStat.edge_model, AgreementStat.edge_model_version)
                    .where(AgreementStat.judged >= self._reference_size + self._window)
                    .order_by(AgreementStat.device_group, AgreementStat.edge_model, AgreementStat.edge_model_version)
                )
            )
        for group, model, version in keys:
            await self._check_key(report, group, model, version)
        return report

    async def _check_key(self, report: DriftReport, group: str, model: str, version: str) -> None:
        alerts: list[DriftAlert] = []
        for metric, column_name in METRICS.items():
            column = getattr(Event, column_name)
            async with self._store.transaction("check drift") as session:
                base = (
                    select(Event.id, column)
                    .join(Device, Device.device_id == Event.device_id)
                    .where(
                        Event.kind == EventKind.ESCALATION,
                        Device.device_group == group,
                        Event.edge_model == model,
                        Event.edge_model_version == version,
                        column.is_not(None),
                    )
                )
                reference = await session.scalar(
                    select(DriftReference).where(
                        DriftReference.device_group == group,
                        DriftReference.model == model,
                        DriftReference.model_version == version,
                        DriftReference.metric == metric,
                    )
                )
                first = list(
                    await session.execute(base.order_by(Event.occurred_at, Event.id).limit(self._reference_size))
                )
                if len(first) < self._reference_size:
                    continue
                if reference is None:
                    reference = DriftReference(
                        device_group=group,
                        model=model,
                        model_version=version,
                        metric=metric,
                        source="first_observations",
                        sample=[float(value) for _, value in first],
                        created_at=utc_now(),
                    )
                    session.add(reference)
                reference_ids = {row_id for row_id, _ in first}
                newest = [
                    (row_id, value)
                    for row_id, value in await session.execute(
                        base.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(
                            self._window + self._reference_size
                        )
                    )
                    if row_id not in reference_ids
                ][: self._window]
                if len(newest) < self._window:
                    continue
                live_last_id = max(row_id for row_id, _ in newest)
                previous = await session.scalar(
                    select(DriftAlert.live_last_id)
                    .where(
                        DriftAlert.device_group == group,
                        DriftAlert.model == model,
                        DriftAlert.model_version == version,
                        DriftAlert.metric == metric,
                    )
                    .order_by(DriftAlert.id.desc())
                    .limit(1)
                )
                live = [float(value) for _, value in newest]
                index = psi(reference.sample, live)
                statistic, p_value = ks_2samp(reference.sample, live)
                drifted = index > self._psi_threshold and p_value < self._ks_alpha
                report.checked.append(MetricCheck(group, model, version, metric, index, statistic, p_value, drifted))
                if not drifted:
                    continue
                if previous is not None:
                    since = await session.scalar(
                        select(func.count()).select_from(base.where(Event.id > previous).subquery())
                    )
                    if (since or 0) < self._window:
                        continue  # this drift was raised already; wait for a fresh window
                alert = DriftAlert(
                    at=utc_now(),
                    device_group=group,
                    model=model,
                    model_version=version,
                    metric=metric,
                    psi=index,
                    ks=statistic,
                    ks_p_value=p_value,
                    threshold_psi=self._psi_threshold,
                    live_count=len(live),
                    reference_count=len(reference.sample),
                    live_last_id=live_last_id,
                )
                session.add(alert)
                await session.flush()
                alerts.append(alert)
        if not alerts:
            return
        trigger = await self._open_trigger(group, model, version, alerts)
        self.alerts_raised += len(alerts)
        report.alerts.extend(alerts)
        if trigger is not None:
            report.triggers.append(trigger)
        for alert in alerts:
            log_event(
                logger,
                logging.WARNING,
                "drift_detected",
                group=group,
                model=f"{model}:{version}",
                metric=alert.metric,
                psi=round(alert.psi, 4),
                ks=round(alert.ks, 4),
                p=f"{alert.ks_p_value:.2e}",
            )
            for listener in self._listeners:
                listener(alert, trigger)

    async def _open_trigger(
        self, group: str, model: str, version: str, alerts: list[DriftAlert]
    ) -> RetrainingTrigger | None:
        metrics = ", ".join(f"{alert.metric} (PSI {alert.psi:.2f})" for alert in alerts)
        async with self._store.transaction("open a retraining trigger") as session:
            open_trigger = await session.scalar(
                select(RetrainingTrigger.id).where(
                    RetrainingTrigger.device_group == group,
                    RetrainingTrigger.model == model,
                    RetrainingTrigger.model_version == version,
                    RetrainingTrigger.consumed_at.is_(None),
                )
            )
            if open_trigger is not None:
                return None
            trigger = RetrainingTrigger(
                at=utc_now(),
                device_group=group,
                model=model,
                model_version=version,
                reason=f"drift in {metrics}"[:512],
                alert_id=alerts[0].id,
            )
            session.add(trigger)
            await session.flush()
            return trigger

    async def alerts(
        self, *, group: str | None = None, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[DriftAlert]:
        conditions = []
        if group is not None:
            conditions.append(DriftAlert.device_group == group)
        if model is not None:
            conditions.append(DriftAlert.model == model)
        async with self._store.transaction("list drift alerts") as session:
            query = select(DriftAlert).order_by(DriftAlert.id.desc())
            return await page_of(session, query, DriftAlert, conditions, limit=limit, offset=offset)

    async def triggers(self, *, open_only: bool = False, limit: int = 100, offset: int = 0) -> Page[RetrainingTrigger]:
        conditions = [RetrainingTrigger.consumed_at.is_(None)] if open_only else []
        async with self._store.transaction("list retraining triggers") as session:
            query = select(RetrainingTrigger).order_by(RetrainingTrigger.id.desc())
            return await page_of(session, query, RetrainingTrigger, conditions, limit=limit, offset=offset)

    async def consume(self, trigger_id: int, *, consumer: str, at: datetime | None = None) -> RetrainingTrigger:
        """Mark a trigger consumed; :class:`ConflictError` if someone consumed it first."""
        async with self._store.transaction("consume a retraining trigger") as session:
            result = await session.execute(
                update(RetrainingTrigger)
                .where(RetrainingTrigger.id == trigger_id, RetrainingTrigger.consumed_at.is_(None))
                .values(consumed_at=at or utc_now(), consumed_by=consumer[:64])
            )
            trigger = await session.get(RetrainingTrigger, trigger_id, populate_existing=True)
            if trigger is None:
                raise NotFoundError(f"retraining trigger {trigger_id} does not exist")
            if getattr(result, "rowcount", 0) != 1:
                raise ConflictError(f"retraining trigger {trigger_id} was consumed by {trigger.consumed_by}")
            return trigger

    async def take_trigger(self, *, consumer: str) -> RetrainingTrigger | None:
        """The oldest open trigger, consumed by ``consumer``; ``None`` if none is open."""
        for _ in range(5):  # another consumer may take the one we saw
            async with self._store.transaction("find a retraining trigger") as session:
                oldest = await session.scalar(
                    select(RetrainingTrigger.id)
                    .where(RetrainingTrigger.consumed_at.is_(None))
                    .order_by(RetrainingTrigger.id)
                    .limit(1)
                )
            if oldest is None:
                return None
            try:
                return await self.consume(oldest, consumer=consumer)
            except ConflictError:
                continue
        return None
