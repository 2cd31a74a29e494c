"""The hub's federated-learning routes, under ``/api/v1/fl``: rounds, proofs, runs and their triggers.

Thin, like the hub's own routes: who may call is checked by :func:`cloud_hub.dependencies.require`, the work
is :class:`cloud_hub.fl.runs.FederatedRuns`'s (kept in ``app.state.federation`` by the hub's lifespan).
Readers (read-only, operator, admin) read rounds and triggers; a device token reads its own proofs only;
operators and admins start runs (the hub's audit middleware records every such request).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from cloud_hub.auth import OPERATE_SCOPES, READ_SCOPES, Principal
from cloud_hub.dependencies import ServicesDep, require
from cloud_hub.fl.errors import CoordinatorUnavailableError, RunInProgressError
from cloud_hub.fl.runs import FederatedRuns, RoundView, RunLauncher, StartedRun
from cloud_hub.fl.settings import StrategyName
from cloud_hub.schemas import ProblemPublic, TriggerPublic
from cloud_hub.store import Scope

PREFIX = "/api/v1/fl"
RoundId = Annotated[int, Path(ge=0, le=2**62, description="The notary's round id.")]
DeviceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

Reader = Annotated[Principal, Depends(require(READ_SCOPES))]
ReaderOrDevice = Annotated[Principal, Depends(require(READ_SCOPES | {Scope.DEVICE}))]
Operator = Annotated[Principal, Depends(require(OPERATE_SCOPES))]

DENIED: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemPublic, "description": "No token, or an unknown or revoked one."},
    403: {"model": ProblemPublic, "description": "The token's scope does not allow this."},
    429: {"model": ProblemPublic, "description": "The token is over its rate limit (see Retry-After)."},
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ProblemPublic, "description": "No coordinator, or the SuperLink, ledger or chain did not answer."}
}


def get_federation(request: Request, services: ServicesDep) -> FederatedRuns:
    """The running hub's federated coordinator (``services`` makes this 503 while the hub starts or stops)."""
    federation: FederatedRuns | None = getattr(request.app.state, "federation", None)
    if federation is None:
        raise HTTPException(status_code=503, detail="the hub's federated coordinator is not running")
    return federation


def get_launcher(federation: Annotated[FederatedRuns, Depends(get_federation)]) -> RunLauncher | None:
    """Where runs are started; tests swap it through ``app.dependency_overrides``."""
    return federation.launcher


FederationDep = Annotated[FederatedRuns, Depends(get_federation)]
LauncherDep = Annotated[RunLauncher | None, Depends(get_launcher)]


# Schemas -------------------------------------------------------------------------------------------


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class RejectedUpdatePublic(_Public):
    device_id: str | None
    node_id: int
    reason: str


class ProducedModelPublic(_Public):
    """The edge model the run built after its last round."""

    version: str
    sha256: str
    signed: bool
    artifact: str
    anchor_tx: str | None = None


class RoundChainPublic(_Public):
    """What the hub's notary holds for the round."""

    committed: bool
    matches: bool = Field(description="Root, leaf count and model hash equal the journal's.")
    root: str | None = None
    leaf_count: int | None = None
    model_hash: str | None = None
    block_number: int | None = None


class RoundPublic(_Public):
    round_id: int
    server_round: int = Field(description="Flower's round number within its run (from 1).")
    strategy: str
    at: datetime
    clients: list[str] = Field(description="Devices whose updates were accepted (the round's leaves).")
    accepted: int
    rejected: list[RejectedUpdatePublic]
    metrics: dict[str, float] = Field(description="server.*, clients.* (evaluation) and seconds.* of the round.")
    merkle_root: str | None
    leaf_count: int
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    global_model_hash: str | None
    model: ProducedModelPublic | None = Field(description="The edge model built from the run's last round.")

    @classmethod
    def from_view(cls, view: RoundView) -> RoundPublic:
        model = view.model
        return cls(
            round_id=view.round_id,
            server_round=view.server_round,
            strategy=view.strategy,
            at=datetime.fromtimestamp(view.at, UTC),
            clients=view.devices,
            accepted=len(view.devices),
            rejected=[
                RejectedUpdatePublic(
                    device_id=item.get("device_id"), node_id=int(item.get("node_id", 0)), reason=str(item["reason"])
                )
                for item in view.rejected
            ],
            metrics=view.metrics,
            merkle_root=view.root,
            leaf_count=view.leaf_count,
            tx_hash=view.tx_hash,
            block_number=view.block_number,
            gas_used=view.gas_used,
            global_model_hash=view.model_hash,
            model=None
            if model is None
            else ProducedModelPublic(
                version=str(model["version"]),
                sha256=str(model["sha256"]),
                signed=bool(model.get("signed")),
                artifact=str(model.get("artifact", "")),
                anchor_tx=model.get("anchor_tx"),
            ),
        )


class RoundDetailPublic(RoundPublic):
    ledger_leaf_count: int | None = Field(description="Leaves the hub's ledger holds for the round (None: none).")
    chain: RoundChainPublic | None = Field(description="The notary's record; None when the hub has no notary.")

    @classmethod
    def from_detail(cls, view: RoundView) -> RoundDetailPublic:
        chain = None
        if view.chain_checked:
            record = view.chain
            chain = RoundChainPublic(committed=False, matches=False)
            if record is not None:
                chain = RoundChainPublic(
                    committed=True,
                    matches=(record.root.hex(), record.leaf_count, record.model_hash.hex())
                    == (view.root, view.leaf_count, view.model_hash),
                    root=record.root.hex(),
                    leaf_count=record.leaf_count,
                    model_hash=record.model_hash.hex(),
                    block_number=record.block_number,
                )
        return cls(**RoundPublic.from_view(view).model_dump(), ledger_leaf_count=view.ledger_leaf_count, chain=chain)


class RoundsPublic(_Public):
    items: list[RoundPublic]
    total: int


class ProofStepPublic(_Public):
    sibling: str = Field(description="hex")
    side: str = Field(description="left or right")


class LeafRecordPublic(_Public):
    device_id: str
    update_digest: str = Field(description="hex sha256 of the update's canonical bytes")
    signature: str = Field(description="hex Ed25519 signature of the device over the digest")


class InclusionProofPublic(_Public):
    """The device's proof, in the wire form of :class:`protocol.notary.InclusionProof` (bytes as hex)."""

    round_id: int
    record: LeafRecordPublic
    proof: list[ProofStepPublic]
    model_hash: str


class ProofPublic(_Public):
    inclusion_proof: InclusionProofPublic
    leaf: str = Field(description="hex leaf hash (round id, device id, digest, signature)")
    merkle_root: str = Field(description="hex root the proof leads to; compare it with the chain's")


class RunRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_rounds: int | None = Field(default=None, ge=1, le=10_000)
    strategy: StrategyName | None = None
    reason: str | None = Field(default=None, min_length=1, max_length=200)


class RunStartedPublic(_Public):
    run_id: int = Field(description="Flower's run id.")
    reason: str
    requested_by: str
    started_at: datetime
    run_config: dict[str, str | int | float | bool]
    triggers: list[int] = Field(description="Retraining triggers this run answered.")

    @classmethod
    def from_run(cls, run: StartedRun) -> RunStartedPublic:
        return cls(
            run_id=run.run_id,
            reason=run.reason,
            requested_by=run.requested_by,
            started_at=datetime.fromtimestamp(run.started_at, UTC),
            run_config=run.run_config,
            triggers=run.triggers,
        )


class FederatedTriggersPublic(_Public):
    items: list[TriggerPublic] = Field(description="Open retraining triggers from drift, oldest first.")
    total: int
    drift_rounds: bool = Field(description="Whether drift starts runs on this hub ([hub.fl] drift_rounds).")
    due: str | None = Field(description="Why a run is due now (drift or schedule), if one is.")
    running: RunStartedPublic | None = Field(description="The run the hub started last, while it goes.")


# Routes --------------------------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX, tags=["federated"], responses=DENIED)


@router.get("/rounds", response_model=RoundsPublic)
async def list_rounds(federation: FederationDep, _: Reader) -> RoundsPublic:
    """Every notarized round the hub's journal holds, by round id."""
    items = [RoundPublic.from_view(view) for view in await asyncio.to_thread(federation.rounds)]
    return RoundsPublic(items=items, total=len(items))


@router.get(
    "/rounds/{round_id}", response_model=RoundDetailPublic, responses={404: {"model": ProblemPublic}, **UNAVAILABLE}
)
async def get_round(round_id: RoundId, federation: FederationDep, _: Reader) -> RoundDetailPublic:
    """One round: clients, rejected updates and why, metrics, Merkle root, transaction, and the chain's record."""
    try:
        view = await federation.round(round_id)
    except CoordinatorUnavailableError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return RoundDetailPublic.from_detail(view)


@router.get(
    "/rounds/{round_id}/proof/{device_id}",
    response_model=ProofPublic,
    responses={404: {"model": ProblemPublic}, **UNAVAILABLE},
)
async def get_proof(
    round_id: RoundId, device_id: DeviceId, federation: FederationDep, principal: ReaderOrDevice
) -> ProofPublic:
    """A device's inclusion proof in a round; a device token reads its own only."""
    if principal.scope is Scope.DEVICE and not principal.may_act_as(device_id):
        raise HTTPException(
            status_code=403, detail=f"a device token for {principal.device_id!r} reads only its own proofs"
        )
    try:
        proof, root = await asyncio.to_thread(federation.proof, round_id, device_id)
    except CoordinatorUnavailableError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return ProofPublic(
        inclusion_proof=InclusionProofPublic.model_validate_json(proof.model_dump_json()),
        leaf=proof.leaf.hex(),
        merkle_root=root.hex(),
    )


@router.post(
    "/runs",
    response_model=RunStartedPublic,
    status_code=202,
    responses={409: {"model": ProblemPublic, "description": "A run the hub started is still going."}, **UNAVAILABLE},
)
async def start_run(
    federation: FederationDep, launcher: LauncherDep, principal: Operator, body: RunRequest | None = None
) -> RunStartedPublic:
    """Ask the coordinator to start a federated run now (202 with Flower's run id)."""
    request = body or RunRequest()
    try:
        run = await federation.start(
            reason=request.reason or "started by hand",
            requested_by=principal.actor,
            num_rounds=request.num_rounds,
            strategy=request.strategy,
            launcher=launcher,
        )
    except RunInProgressError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except CoordinatorUnavailableError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return RunStartedPublic.from_run(run)


@router.get("/triggers", response_model=FederatedTriggersPublic, responses=UNAVAILABLE)
async def list_triggers(federation: FederationDep, launcher: LauncherDep, _: Reader) -> FederatedTriggersPublic:
    """Retraining triggers waiting for a run, whether one is due, and the run going now."""
    try:
        pending = await federation.pending_triggers()
        due = await federation.due()
        running = await federation.running(launcher)
    except CoordinatorUnavailableError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    current = federation.current
    return FederatedTriggersPublic(
        items=[TriggerPublic.from_row(trigger) for trigger in pending],
        total=len(pending),
        drift_rounds=federation.drift_rounds,
        due=due,
        running=RunStartedPublic.from_run(current) if running is not None and current is not None else None,
    )
