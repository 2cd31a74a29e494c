"""The hub's view of federated learning: the rounds runs left behind, each device's proof, starting a run.

:class:`FederatedRuns` is what the routes of :mod:`cloud_hub.fl.routes` call. It reads the round journal
(``state-dir/rounds.jsonl`` and ``run.json``, written by the ServerApp) and the round ledger
(``state-dir/ledger``), asks the hub's notary (when it has one) what the chain holds, and starts runs through
a :class:`RunLauncher`: :class:`SuperLinkLauncher` submits the Flower app with ``flwr run`` to a SuperLink
(:class:`cloud_hub.fl.deployment.LoopbackDeployment` is one too), :class:`InMemoryLauncher` is the test double.

Only one run the hub started goes at a time: another request while it runs is refused
(:class:`RunInProgressError`). With ``drift_rounds`` on, the drift monitor's retraining triggers reach the
:class:`RoundTrigger` (its listener calls :meth:`RoundTrigger.report_drift`, and triggers stored while the
hub was down are found in the database); :meth:`FederatedRuns.start_due` starts the run once the cooldown
allows and consumes the triggers it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cloud_hub.drift import DriftMonitor
from cloud_hub.errors import ConflictError, NotFoundError
from cloud_hub.fl.errors import CoordinatorUnavailableError, DeploymentError, RunInProgressError, SettingsError
from cloud_hub.fl.journal import RoundJournal
from cloud_hub.fl.settings import HubFederationSettings, RunConfigValue
from cloud_hub.fl.trigger import Reason, RoundTrigger, TriggerSettings
from cloud_hub.notary import JsonLinesRoundLedger, LedgerError, Notary, NotaryError, StoredRound
from cloud_hub.store import RetrainingTrigger
from protocol.notary import InclusionProof, RoundRecord

CONSUMER = "fl-coordinator"
"""Who consumes the retraining triggers a run answered (``consumed_by``)."""


class RunLauncher(Protocol):
    """Where federated runs are started: a Flower SuperLink, in production. Both calls block."""

    def submit(self, run_config: Mapping[str, Any]) -> int:
        """Start a run of the Flower app with these run-config overrides; its run id."""
        ...

    def status(self, run_id: int) -> str:
        """The run's status as Flower reports it (``finished:completed`` once over)."""
        ...


@dataclass
class SuperLinkLauncher:
    """Submits the app to a SuperLink with the ``flwr`` CLI (``flwr run``, ``flwr ls``)."""

    connection: str
    work_dir: Path
    flwr_home: Path | None = None
    app_dir: Path | None = None
    timeout_s: float = 30.0

    def _environment(self) -> dict[str, str] | None:
        if self.flwr_home is None:
            return None
        return {**os.environ, "FLWR_HOME": str(self.flwr_home)}

    def submit(self, run_config: Mapping[str, Any]) -> int:
        from cloud_hub.fl.deployment import APP_DIR, submit_run

        return submit_run(
            self.connection,
            run_config,
            app_dir=self.app_dir or APP_DIR,
            work_dir=self.work_dir,
            env=self._environment(),
            timeout=max(self.timeout_s, 120.0),  # flwr run builds and uploads the app first
        )

    def status(self, run_id: int) -> str:
        from cloud_hub.fl.deployment import flwr_command

        command = [flwr_command(), "ls", self.connection, "--run-id", str(run_id), "--format", "json"]
        try:
            result = subprocess.run(
                command,
                cwd=self.work_dir,
                env=self._environment(),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"flwr ls timed out after {self.timeout_s:.0f} s") from exc
        if result.returncode != 0:
            raise DeploymentError(f"flwr ls failed ({result.returncode}): {result.stdout}{result.stderr}")
        try:
            runs = json.loads(result.stdout).get("runs", [])
        except (ValueError, AttributeError) as exc:
            raise DeploymentError(f"flwr ls gave no run listing: {result.stdout}") from exc
        if not runs:
            raise DeploymentError(f"run {run_id} is unknown to the SuperLink {self.connection}")
        return str(runs[0]["status"])


class InMemoryLauncher:
    """A launcher that only records what it was asked (unit tests): runs stay ``running`` until finished."""

    def __init__(self, *, fail: str | None = None) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.statuses: dict[int, str] = {}
        self.fail = fail
        self._lock = threading.Lock()

    def submit(self, run_config: Mapping[str, Any]) -> int:
        if self.fail is not None:
            raise DeploymentError(self.fail)
        with self._lock:
            self.submitted.append(dict(run_config))
            run_id = len(self.submitted)
            self.statuses[run_id] = "running"
            return run_id

    def status(self, run_id: int) -> str:
        if self.fail is not None:
            raise DeploymentError(self.fail)
        with self._lock:
            if run_id not in self.statuses:
                raise DeploymentError(f"run {run_id} is unknown")
            return self.statuses[run_id]

    def finish(self, run_id: int, status: str = "finished:completed") -> None:
        with self._lock:
            self.statuses[run_id] = status


@dataclass(frozen=True, slots=True)
class StartedRun:
    run_id: int
    reason: str
    requested_by: str
    started_at: float
    run_config: dict[str, RunConfigValue]
    triggers: list[int] = field(default_factory=list)
    """The retraining triggers this run answered (consumed)."""


@dataclass(frozen=True, slots=True)
class RoundView:
    """One notarized round, from the journal, the ledger and (when the hub has a notary) the chain."""

    round_id: int
    server_round: int
    strategy: str
    at: float
    devices: list[str]
    rejected: list[dict[str, Any]]
    root: str | None
    leaf_count: int
    model_hash: str | None
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    metrics: dict[str, float]
    model: dict[str, Any] | None
    ledger_leaf_count: int | None
    chain: RoundRecord | None = None
    chain_checked: bool = False


class FederatedRuns:
    """See the module docstring. ``settings`` None: a hub without federated learning (no rounds, no runs)."""

    def __init__(
        self,
        settings: HubFederationSettings | None,
        *,
        launcher: RunLauncher | None = None,
        drift: DriftMonitor | None = None,
        notary: Notary | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.notary = notary
        self._drift = drift
        self._clock = clock
        self._lock = asyncio.Lock()
        self.current: StartedRun | None = None
        self.journal = RoundJournal(settings.state_dir) if settings is not None else None
        self.ledger = JsonLinesRoundLedger(settings.state_dir / "ledger") if settings is not None else None
        last = (self.journal.run() or {}).get("started_at") if self.journal is not None else None
        self.trigger = RoundTrigger(
            TriggerSettings(
                interval_s=settings.interval_s if settings is not None else None,
                min_agreement=None,  # the drift monitor judges the fleet's agreement; its triggers arrive here
                cooldown_s=settings.cooldown_s if settings is not None else 0.0,
            ),
            last_round_at=float(last) if isinstance(last, int | float) else 0.0,
        )
        self.drift_rounds = settings is not None and settings.drift_rounds
        if self.drift_rounds and drift is not None:
            drift.on_drift(self._drift_found)

    @classmethod
    def from_settings(
        cls, settings: HubFederationSettings | None, *, drift: DriftMonitor | None, notary: Notary | None
    ) -> FederatedRuns:
        """The hub's coordinator: a :class:`SuperLinkLauncher` when ``settings.connection`` names one."""
        launcher: RunLauncher | None = None
        if settings is not None:
            try:
                settings.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SettingsError(f"[hub.fl] state_dir {settings.state_dir} cannot be used: {exc}") from exc
        if settings is not None and settings.connection is not None:
            launcher = SuperLinkLauncher(
                connection=settings.connection,
                work_dir=settings.state_dir / "submissions",
                flwr_home=settings.flwr_home,
                app_dir=settings.app_dir,
                timeout_s=settings.status_timeout_s,
            )
        return cls(settings, launcher=launcher, drift=drift, notary=notary)

    @property
    def check_interval_s(self) -> float:
        """How often the hub asks :meth:`start_due`."""
        return self.settings.check_interval_s if self.settings is not None else 30.0

    @property
    def schedules(self) -> bool:
        """Whether the hub starts runs on its own (on drift or on a schedule)."""
        return self.settings is not None and (self.drift_rounds or self.settings.interval_s is not None)

    def _drift_found(self, alert: object, trigger: RetrainingTrigger | None) -> None:
        if trigger is not None:
            self.trigger.report_drift()

    # Rounds -------------------------------------------------------------------------------------------

    def rounds(self) -> list[RoundView]:
        """Every journaled round, by round id."""
        if self.journal is None:
            return []
        run = self.journal.run()
        entries = sorted(self.journal.rounds(), key=lambda entry: int(entry["round_id"]))
        return [self._view(entry, run, stored=None) for entry in entries]

    async def round(self, round_id: int) -> RoundView:
        """One round, checked against the ledger and the chain; :class:`NotFoundError` if it is not journaled."""
        view = await asyncio.to_thread(self._read_round, round_id)
        if self.notary is None:
            return view
        notary = self.notary
        try:
            record = await asyncio.to_thread(notary.get_round, round_id)
        except NotaryError as exc:
            raise CoordinatorUnavailableError(f"the chain did not answer for round {round_id}: {exc}") from exc
        return replace(view, chain=record, chain_checked=True)

    def _read_round(self, round_id: int) -> RoundView:
        if self.journal is None or self.ledger is None:
            raise NotFoundError("this hub keeps no federated rounds ([hub.fl] is not set)")
        found = [entry for entry in self.journal.rounds() if int(entry["round_id"]) == round_id]
        if not found:
            raise NotFoundError(f"round {round_id} is not in the journal")
        return self._view(found[-1], self.journal.run(), stored=self._stored(round_id))

    def proof(self, round_id: int, device_id: str) -> tuple[InclusionProof, bytes]:
        """The device's inclusion proof in the round and the root it leads to; NotFoundError if it has none."""
        if self.ledger is None:
            raise NotFoundError("this hub keeps no federated rounds ([hub.fl] is not set)")
        stored = self._stored(round_id)
        if stored is None:
            raise NotFoundError(f"no leaves are recorded for round {round_id}")
        record = next((leaf for leaf in stored.leaves if leaf.device_id == device_id), None)
        if record is None:
            raise NotFoundError(f"device {device_id!r} has no update in round {round_id}")
        tree = stored.tree()
        proof = InclusionProof(
            round_id=round_id, record=record, proof=tree.proof(record.leaf(round_id)), model_hash=stored.model_hash
        )
        return proof, tree.root

    def _stored(self, round_id: int) -> StoredRound | None:
        assert self.ledger is not None
        try:
            return self.ledger.stored(round_id)
        except LedgerError as exc:
            raise CoordinatorUnavailableError(f"the round ledger cannot be read: {exc}") from exc

    def _view(self, entry: dict[str, Any], run: dict[str, Any] | None, *, stored: StoredRound | None) -> RoundView:
        round_id = int(entry["round_id"])
        server_round = int(entry["server_round"])
        metrics: dict[str, float] = {
            f"seconds.{name}": float(value)
            for name, value in (entry.get("seconds") or {}).items()
            if isinstance(value, int | float)
        }
        model = None
        if run is not None and _in_run(round_id, run):
            for scope, key in (("server", "server_metrics"), ("clients", "client_metrics")):
                for name, value in (run.get(key) or {}).get(str(server_round), {}).items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        metrics[f"{scope}.{name}"] = float(value)
            if run.get("last_round_id") == round_id and run.get("model"):
                model = dict(run["model"])
        return RoundView(
            round_id=round_id,
            server_round=server_round,
            strategy=str(entry.get("strategy", "")),
            at=float(entry.get("at", 0.0)),
            devices=list(entry.get("devices", [])),
            rejected=list(entry.get("rejected", [])),
            root=entry.get("root"),
            leaf_count=len(entry.get("leaves", [])),
            model_hash=entry.get("model_hash"),
            tx_hash=entry.get("tx_hash"),
            block_number=entry.get("block_number"),
            gas_used=entry.get("gas_used"),
            metrics=metrics,
            model=model,
            ledger_leaf_count=None if stored is None else len(stored.leaves),
        )

    # Runs ---------------------------------------------------------------------------------------------

    def run_config(self, *, num_rounds: int | None = None, strategy: str | None = None) -> dict[str, RunConfigValue]:
        if self.settings is None:
            raise CoordinatorUnavailableError("this hub runs no federated learning ([hub.fl] is not set)")
        values: dict[str, RunConfigValue] = dict(self.settings.run_config)
        values["state-dir"] = str(self.settings.state_dir.resolve())
        if num_rounds is not None:
            values["num-rounds"] = num_rounds
        if strategy is not None:
            values["strategy"] = strategy
        return values

    async def running(self, launcher: RunLauncher | None = None) -> str | None:
        """The status of the run the hub started last while it is not finished, else None."""
        launcher = launcher or self.launcher
        current = self.current
        if current is None or launcher is None:
            return None
        try:
            status = await asyncio.to_thread(launcher.status, current.run_id)
        except DeploymentError as exc:
            raise CoordinatorUnavailableError(f"the SuperLink did not report run {current.run_id}: {exc}") from exc
        return None if status.startswith("finished") else status

    async def start(
        self,
        *,
        reason: str,
        requested_by: str,
        num_rounds: int | None = None,
        strategy: str | None = None,
        launcher: RunLauncher | None = None,
        triggers: list[int] | None = None,
    ) -> StartedRun:
        """Submit a run; :class:`RunInProgressError` while the last one goes, :class:`CoordinatorUnavailableError`
        without a launcher or when the SuperLink refuses."""
        launcher = launcher or self.launcher
        if launcher is None:
            raise CoordinatorUnavailableError(
                "this hub has no federated coordinator: set [hub.fl] connection to a Flower SuperLink"
            )
        run_config = self.run_config(num_rounds=num_rounds, strategy=strategy)
        async with self._lock:
            status = await self.running(launcher)
            if status is not None and self.current is not None:
                raise RunInProgressError(self.current.run_id, status)
            try:
                run_id = await asyncio.to_thread(launcher.submit, run_config)
            except DeploymentError as exc:
                raise CoordinatorUnavailableError(f"the SuperLink did not start the run: {exc}") from exc
            now = self._clock()
            self.current = StartedRun(
                run_id=run_id,
                reason=reason,
                requested_by=requested_by,
                started_at=now,
                run_config=run_config,
                triggers=list(triggers or []),
            )
            self.trigger.started(now)
            return self.current

    async def pending_triggers(self) -> list[RetrainingTrigger]:
        """The drift monitor's open retraining triggers, oldest first."""
        if self._drift is None:
            return []
        page = await self._drift.triggers(open_only=True, limit=1000)
        return sorted(page.items, key=lambda trigger: trigger.id)

    async def due(self) -> Reason | None:
        """Why a run should start now (drift or schedule), or None; open stored triggers count as drift."""
        if not self.schedules:
            return None
        if self.drift_rounds and await self.pending_triggers():
            self.trigger.report_drift()
        return self.trigger.due(self._clock())

    async def start_due(self) -> StartedRun | None:
        """Start a run if one is due and none goes; consume the retraining triggers it answers."""
        reason = await self.due()
        if reason is None or self.launcher is None or await self.running() is not None:
            return None
        pending = [trigger.id for trigger in await self.pending_triggers()] if reason == "drift" else []
        try:
            started = await self.start(reason=reason, requested_by=CONSUMER, triggers=pending)
        except RunInProgressError:
            return None
        if self._drift is not None:
            for trigger_id in pending:
                with contextlib.suppress(ConflictError):  # another hub worker took it meanwhile
                    await self._drift.consume(trigger_id, consumer=f"{CONSUMER} run {started.run_id}")
        return started


def _in_run(round_id: int, run: Mapping[str, Any]) -> bool:
    first = run.get("first_round_id")
    if not isinstance(first, int):
        return False
    last = run.get("last_round_id")
    if not isinstance(last, int):
        num_rounds = run.get("num_rounds")
        last = first + int(num_rounds) - 1 if isinstance(num_rounds, int) else first
    return first <= round_id <= last
