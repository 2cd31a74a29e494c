"""Staged rollouts of a model version to a device group: canary first, then all, or back.

The state machine::

                 promote (by hand, or the canary is no worse than the incumbent)
    ┌────────┐ ─────────────────────────────────────────────────────────────▶ ┌──────────┐
    │ canary │                                                                │ promoted │
    └────────┘ ─── the canary is worse ──▶ ┌─────────────┐                    └──────────┘
         │                                 │ rolled_back │
         └──────── abort (by hand) ──────▶ ├─────────────┤
                                           │ aborted     │
                                           └─────────────┘

A rollout starts in ``canary``: the devices of the group whose id hashes below the canary
percentage (:func:`in_canary`, the same devices every time) are told to load the new version
(``update_model`` commands). Promotion tells every other device of the group; a rollback or an
abort tells the canary devices to go back to the incumbent version. Every transition is stored with
its reason, its actor and the figures behind it; the three end states are final.

The decision (:func:`decide`) is pure: over the window since the rollout began, the canary cohort's
agreement rate (verdicts agreeing with its edge results) and error rate (error events among all its
reports: errors and escalations) are compared with the incumbent cohort's (the rest of the group).
Once both cohorts have ``min_samples`` verdicts, the canary is promoted if it is no worse than the
incumbent by more than ``tolerance`` on both, and rolled back otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select

from cloud_hub.errors import ConflictError, NotFoundError, PublishError
from cloud_hub.log import log_event
from cloud_hub.store import (
    Device,
    Event,
    EventKind,
    ModelVersion,
    Page,
    Rollout,
    RolloutState,
    RolloutTransition,
    Store,
    page_of,
    utc_now,
)
from protocol.codec import encode
from protocol.messages import Command, CommandName
from protocol.topics import DEFAULT_ROOT, Kind, Topic

logger = logging.getLogger("edgefleet.hub.rollout")

Publish = Callable[[str, bytes], Awaitable[None]]

TRANSITIONS: dict[RolloutState, frozenset[RolloutState]] = {
    RolloutState.CANARY: frozenset({RolloutState.PROMOTED, RolloutState.ROLLED_BACK, RolloutState.ABORTED}),
    RolloutState.PROMOTED: frozenset(),
    RolloutState.ROLLED_BACK: frozenset(),
    RolloutState.ABORTED: frozenset(),
}
OPEN_STATES = frozenset(state for state, targets in TRANSITIONS.items() if targets)


def can_move(source: RolloutState, target: RolloutState) -> bool:
    return target in TRANSITIONS[source]


def canary_bucket(device_id: str) -> float:
    """Where a device falls in [0, 100): a hash of its id, so the assignment never changes."""
    digest = hashlib.sha256(device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def in_canary(device_id: str, percent: float) -> bool:
    """Whether the device is in a canary of ``percent`` % of its group."""
    return canary_bucket(device_id) < percent


@dataclass(frozen=True, slots=True)
class CohortStats:
    """What one cohort (the canary, or the incumbent) did over the window."""

    devices: int
    judged: int
    agreed: int
    errors: int

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.judged if self.judged else None

    @property
    def error_rate(self) -> float | None:
        reports = self.judged + self.errors
        return self.errors / reports if reports else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "judged": self.judged,
            "agreed": self.agreed,
            "errors": self.errors,
            "agreement_rate": self.agreement_rate,
            "error_rate": self.error_rate,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` concluded: a target state, or ``None`` to wait, with the reason."""

    target: RolloutState | None
    reason: str


def decide(canary: CohortStats, incumbent: CohortStats, *, min_samples: int, tolerance: float) -> Decision:
    """Promote, roll back, or wait (see the module's docstring)."""
    if incumbent.devices == 0:
        return Decision(None, "no incumbent cohort to compare with: promote or abort by hand")
    if canary.judged < min_samples or incumbent.judged < min_samples:
        return Decision(
            None,
            f"waiting for {min_samples} verdicts per cohort (canary {canary.judged}, incumbent {incumbent.judged})",
        )
    assert canary.agreement_rate is not None and incumbent.agreement_rate is not None
    canary_errors, incumbent_errors = canary.error_rate or 0.0, incumbent.error_rate or 0.0
    figures = (
        f"agreement {canary.agreement_rate:.3f} vs {incumbent.agreement_rate:.3f}, "
        f"error rate {canary_errors:.3f} vs {incumbent_errors:.3f} (tolerance {tolerance})"
    )
    if canary.agreement_rate < incumbent.agreement_rate - tolerance:
        return Decision(
            RolloutState.ROLLED_BACK, f"canary agrees less with the full model than the incumbent: {figures}"
        )
    if canary_errors > incumbent_errors + tolerance:
        return Decision(RolloutState.ROLLED_BACK, f"canary reports more errors than the incumbent: {figures}")
    return Decision(RolloutState.PROMOTED, f"canary no worse than the incumbent: {figures}")


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    rollout: Rollout
    transitions: list[RolloutTransition]
    canary: CohortStats
    incumbent: CohortStats
    decision: Decision


@dataclass
class RolloutCounters:
    commands_sent: int = 0
    commands_failed: int = 0
    transitions: dict[str, int] = field(default_factory=dict)


class RolloutService:
    """Creates, moves and evaluates rollouts; sends ``update_model`` commands through ``publish``.

    ``publish`` is ``None`` when the hub has no MQTT connection: the transitions are stored and the
    commands counted as failed (a device that missed one is told again at the next transition).
    """

    def __init__(
        self,
        store: Store,
        *,
        publish: Publish | None,
        device_model_dir: str = "/var/lib/edgefleet/models",
        root: str = DEFAULT_ROOT,
        clock: Callable[[], float] = time.time,
        on_transition: Callable[[Rollout, RolloutState | None, RolloutState], None] | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        self._device_model_dir = device_model_dir.rstrip("/")
        self._root = root
        self._clock = clock
        self._on_transition = on_transition
        self.counters = RolloutCounters()

    async def create(
        self,
        *,
        model_name: str,
        model_version: str,
        device_group: str,
        canary_percent: float,
        incumbent_version: str | None,
        min_samples: int,
        tolerance: float,
        actor: str,
    ) -> Rollout:
        """Start a rollout in ``canary`` and tell the canary devices; :class:`ConflictError` if the group
        has an open rollout, :class:`NotFoundError` if the model version is not registered."""
        now = utc_now()
        async with self._store.transaction("create a rollout") as session:
            model = await session.scalar(
                select(ModelVersion.id).where(ModelVersion.name == model_name, ModelVersion.version == model_version)
            )
            if model is None:
                raise NotFoundError(f"model {model_name!r} version {model_version!r} is not in the registry")
            open_rollout = await session.scalar(
                select(Rollout.id).where(Rollout.device_group == device_group, Rollout.state.in_(OPEN_STATES))
            )
            if open_rollout is not None:
                raise ConflictError(
                    f"device group {device_group!r} has an open rollout ({open_rollout}); promote or abort it first"
                )
            if incumbent_version is None:
                incumbent_version = await session.scalar(
                    select(Rollout.model_version)
                    .where(
                        Rollout.device_group == device_group,
                        Rollout.model_name == model_name,
                        Rollout.state == RolloutState.PROMOTED,
                    )
                    .order_by(Rollout.id.desc())
                    .limit(1)
                )
            if incumbent_version == model_version:
                raise ConflictError(f"version {model_version!r} is already the incumbent of group {device_group!r}")
            rollout = Rollout(
                model_name=model_name,
                model_version=model_version,
                incumbent_version=incumbent_version,
                device_group=device_group,
                canary_percent=canary_percent,
                min_samples=min_samples,
                tolerance=tolerance,
                state=RolloutState.CANARY,
                created_at=now,
                updated_at=now,
            )
            session.add(rollout)
            await session.flush()
            devices = await self._group_devices(session, device_group)
            canary = [device for device in devices if in_canary(device.device_id, canary_percent)]
            sent, failed = await self._command(canary, model_name, model_version, rollout.id)
            session.add(
                RolloutTransition(
                    rollout_id=rollout.id,
                    at=now,
                    from_state=None,
                    to_state=RolloutState.CANARY,
                    reason=f"created: {canary_percent:g} % of group {device_group!r} first",
                    actor=actor,
                    detail={
                        "canary_devices": len(canary),
                        "group_devices": len(devices),
                        "sent": sent,
                        "failed": failed,
                    },
                )
            )
        self._moved(rollout, None, RolloutState.CANARY, actor=actor)
        return rollout

    async def promote(self, rollout_id: int, *, actor: str, reason: str = "promoted by hand") -> Rollout:
        return await self._move(rollout_id, RolloutState.PROMOTED, actor=actor, reason=reason)

    async def abort(self, rollout_id: int, *, actor: str, reason: str = "aborted by hand") -> Rollout:
        return await self._move(rollout_id, RolloutState.ABORTED, actor=actor, reason=reason)

    async def evaluate(self, rollout_id: int, *, actor: str = "hub") -> RolloutStatus:
        """Compare the cohorts and promote or roll back when the figures say so."""
        status = await self.status(rollout_id)
        decision = status.decision
        if status.rollout.state in OPEN_STATES and decision.target is not None:
            figures = {"canary": status.canary.as_dict(), "incumbent": status.incumbent.as_dict()}
            await self._move(rollout_id, decision.target, actor=actor, reason=decision.reason, figures=figures)
            status = await self.status(rollout_id)
        return status

    async def evaluate_open(self) -> list[RolloutStatus]:
        """Evaluate every open rollout (the hub does this every ``rollout_interval_s``)."""
        async with self._store.transaction("list open rollouts") as session:
            ids = list(await session.scalars(select(Rollout.id).where(Rollout.state.in_(OPEN_STATES))))
        results = []
        for rollout_id in ids:
            try:
                results.append(await self.evaluate(rollout_id))
            except ConflictError:  # moved by hand (or by another worker) meanwhile
                continue
        return results

    async def status(self, rollout_id: int) -> RolloutStatus:
        async with self._store.transaction("read a rollout") as session:
            rollout = await session.get(Rollout, rollout_id)
            if rollout is None:
                raise NotFoundError(f"rollout {rollout_id} does not exist")
            transitions = list(
                await session.scalars(
                    select(RolloutTransition)
                    .where(RolloutTransition.rollout_id == rollout_id)
                    .order_by(RolloutTransition.id)
                )
            )
            canary, incumbent = await self._cohorts(session, rollout)
        decision = (
            decide(canary, incumbent, min_samples=rollout.min_samples, tolerance=rollout.tolerance)
            if rollout.state in OPEN_STATES
            else Decision(None, f"the rollout is {rollout.state.value}")
        )
        return RolloutStatus(rollout, transitions, canary, incumbent, decision)

    async def list_rollouts(
        self, *, state: RolloutState | None = None, group: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Rollout]:
        conditions = []
        if state is not None:
            conditions.append(Rollout.state == state)
        if group is not None:
            conditions.append(Rollout.device_group == group)
        async with self._store.transaction("list rollouts") as session:
            query = select(Rollout).order_by(Rollout.id.desc())
            return await page_of(session, query, Rollout, conditions, limit=limit, offset=offset)

    async def count_by_state(self) -> dict[str, int]:
        async with self._store.transaction("count rollouts") as session:
            rows = await session.execute(select(Rollout.state, func.count()).group_by(Rollout.state))
            return {str(state): count for state, count in rows}

    async def _move(
        self,
        rollout_id: int,
        target: RolloutState,
        *,
        actor: str,
        reason: str,
        figures: dict[str, Any] | None = None,
    ) -> Rollout:
        now = utc_now()
        async with self._store.transaction("move a rollout") as session:
            rollout = await session.get(Rollout, rollout_id, with_for_update=True, populate_existing=True)
            if rollout is None:
                raise NotFoundError(f"rollout {rollout_id} does not exist")
            source = rollout.state
            if not can_move(source, target):
                raise ConflictError(f"rollout {rollout_id} is {source.value}; it cannot become {target.value}")
            devices = await self._group_devices(session, rollout.device_group)
            canary = [device for device in devices if in_canary(device.device_id, rollout.canary_percent)]
            if target is RolloutState.PROMOTED:
                rest = [device for device in devices if not in_canary(device.device_id, rollout.canary_percent)]
                sent, failed = await self._command(rest, rollout.model_name, rollout.model_version, rollout.id)
            elif rollout.incumbent_version is not None:
                sent, failed = await self._command(canary, rollout.model_name, rollout.incumbent_version, rollout.id)
            else:
                sent, failed = 0, 0  # nothing to go back to: the devices keep what they had before, by hand
            rollout.state = target
            rollout.updated_at = now
            session.add(
                RolloutTransition(
                    rollout_id=rollout.id,
                    at=now,
                    from_state=source,
                    to_state=target,
                    reason=reason[:512],
                    actor=actor[:64],
                    detail={"sent": sent, "failed": failed, **(figures or {})},
                )
            )
        self._moved(rollout, source, target, actor=actor, reason=reason)
        return rollout

    def _moved(
        self, rollout: Rollout, source: RolloutState | None, target: RolloutState, *, actor: str, reason: str = ""
    ) -> None:
        self.counters.transitions[target.value] = self.counters.transitions.get(target.value, 0) + 1
        log_event(
            logger,
            logging.INFO,
            "rollout_transition",
            rollout=rollout.id,
            model=f"{rollout.model_name}:{rollout.model_version}",
            group=rollout.device_group,
            source=source.value if source else None,
            target=target.value,
            actor=actor,
            reason=reason or None,
        )
        if self._on_transition is not None:
            self._on_transition(rollout, source, target)

    @staticmethod
    async def _group_devices(session: Any, group: str) -> list[Device]:
        return list(
            await session.scalars(select(Device).where(Device.device_group == group).order_by(Device.device_id))
        )

    async def _cohorts(self, session: Any, rollout: Rollout) -> tuple[CohortStats, CohortStats]:
        devices = await self._group_devices(session, rollout.device_group)
        canary_ids = {device.device_id for device in devices if in_canary(device.device_id, rollout.canary_percent)}
        in_group = select(Device.device_id).where(Device.device_group == rollout.device_group)
        since = rollout.created_at
        verdicts = await session.execute(
            select(
                Event.device_id,
                Event.edge_model_version,
                func.count(),
                func.sum(case((Event.agrees.is_(True), 1), else_=0)),
            )
            .where(
                Event.kind == EventKind.ESCALATION,
                Event.occurred_at >= since,
                Event.edge_model == rollout.model_name,
                Event.device_id.in_(in_group),
            )
            .group_by(Event.device_id, Event.edge_model_version)
        )
        errors = await session.execute(
            select(Event.device_id, func.count())
            .where(Event.kind == EventKind.ERROR, Event.occurred_at >= since, Event.device_id.in_(in_group))
            .group_by(Event.device_id)
        )
        judged = {"canary": 0, "incumbent": 0}
        agreed = {"canary": 0, "incumbent": 0}
        for device_id, version, count, agreeing in verdicts:
            if device_id in canary_ids and version == rollout.model_version:
                cohort = "canary"
            elif (
                device_id not in canary_ids
                and version != rollout.model_version
                and (rollout.incumbent_version is None or version == rollout.incumbent_version)
            ):
                cohort = "incumbent"
            else:
                continue  # a device between versions: its verdicts speak for neither
            judged[cohort] += int(count)
            agreed[cohort] += int(agreeing or 0)
        error_counts = {"canary": 0, "incumbent": 0}
        for device_id, count in errors:
            error_counts["canary" if device_id in canary_ids else "incumbent"] += int(count)
        return (
            CohortStats(len(canary_ids), judged["canary"], agreed["canary"], error_counts["canary"]),
            CohortStats(
                len(devices) - len(canary_ids), judged["incumbent"], agreed["incumbent"], error_counts["incumbent"]
            ),
        )

    async def _command(self, devices: list[Device], model: str, version: str, rollout_id: int) -> tuple[int, int]:
        sent = failed = 0
        for device in devices:
            command = Command(
                device_id=device.device_id,
                timestamp=self._clock(),
                name=CommandName.UPDATE_MODEL,
                args={
                    # The agent loads the manifest from a path; the files are staged there from the URLs below.
                    "manifest": f"{self._device_model_dir}/{model}-{version}.manifest.json",
                    "model": model,
                    "version": version,
                    "manifest_url": f"/api/v1/models/{model}/{version}/manifest",
                    "artifact_url": f"/api/v1/models/{model}/{version}/artifact",
                    "rollout": rollout_id,
                },
            )
            topic = Topic(site=device.site, device=device.device_id, kind=Kind.COMMAND, root=self._root)
            if self._publish is None:
                failed += 1
                continue
            try:
                await self._publish(str(topic), encode(command))
                sent += 1
            except PublishError as exc:
                failed += 1
                log_event(
                    logger,
                    logging.WARNING,
                    "command_not_sent",
                    device_id=device.device_id,
                    message_id=command.message_id,
                    reason=str(exc),
                )
        self.counters.commands_sent += sent
        self.counters.commands_failed += failed
        return sent, failed
