"""One federated run, whatever carries the messages: the ServerApp's body, callable in-process too.

:func:`run_federated` loads the starting head, wraps the chosen strategy in :class:`NotarizingStrategy`,
runs Flower's round loop (``Strategy.start``) on the given Grid, journals every round, writes the final
head, and — when the run settings name a backbone, calibration windows and a signing key — builds the
next int8 edge model and hands it to the model registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from cloud_hub.fl.devices import DeviceKeys
from cloud_hub.fl.errors import SettingsError
from cloud_hub.fl.global_model import BuiltModel, ModelDescription, build_global_model
from cloud_hub.fl.journal import RoundJournal, round_entry
from cloud_hub.fl.notarizing import NotarizedRound, NotarizingStrategy, arrays_digest
from cloud_hub.fl.registry import ModelRegistry, publish_global_model
from cloud_hub.fl.settings import RunSettings
from cloud_hub.fl.strategies import strategy_for
from cloud_hub.notary import Notary, RoundLedger
from protocol.notary import model_anchor_id

FloatArray = npt.NDArray[np.float32]
EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def load_head(path: Path) -> ArrayRecord:
    """A head file (.npz with ``weight`` ``[classes, features]`` and ``bias`` ``[classes]``) as Flower arrays."""
    try:
        with np.load(path) as data:
            weight, bias = np.asarray(data["weight"], dtype=np.float32), np.asarray(data["bias"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise SettingsError(f"cannot read the head {path}: {exc}") from exc
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise SettingsError(f"head {path} has weight {weight.shape} and bias {bias.shape}")
    return ArrayRecord({"weight": Array(weight), "bias": Array(bias)})


def head_arrays(arrays: ArrayRecord) -> tuple[FloatArray, FloatArray]:
    return arrays["weight"].numpy().astype(np.float32), arrays["bias"].numpy().astype(np.float32)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(f"cannot read the model-signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError(f"the model-signing key {path} must be an Ed25519 key")
    return key


@dataclass(slots=True)
class RunOutcome:
    first_round_id: int
    rounds: list[NotarizedRound]
    final_head: ArrayRecord
    head_path: Path
    server_metrics: dict[int, dict[str, Any]]
    client_metrics: dict[int, dict[str, Any]]
    model: BuiltModel | None = None
    registration: Any = None
    anchor: Any = None
    seconds: float = 0.0


def run_federated(
    grid: Grid,
    settings: RunSettings,
    *,
    notary: Notary,
    ledger: RoundLedger,
    device_keys: DeviceKeys,
    registry: ModelRegistry | None = None,
    evaluate_fn: EvaluateFn | None = None,
    description: ModelDescription | None = None,
) -> RunOutcome:
    """Run ``settings.num_rounds`` notarized rounds on ``grid``; see the module docstring."""
    started = time.perf_counter()
    journal = RoundJournal(settings.state_dir)
    first_round_id = settings.first_round_id or journal.next_round_id()
    initial = load_head(settings.initial_head)

    def journal_round(notarized: NotarizedRound) -> None:
        journal.append(round_entry(notarized, strategy=settings.strategy))

    strategy = NotarizingStrategy(
        strategy_for(settings),
        notary=notary,
        ledger=ledger,
        device_keys=device_keys,
        first_round_id=first_round_id,
        on_round=journal_round,
    )
    state: dict[str, Any] = {
        "status": "running",
        "strategy": settings.strategy,
        "num_rounds": settings.num_rounds,
        "first_round_id": first_round_id,
        "initial_model_hash": arrays_digest(initial).hex(),
        "started_at": time.time(),
    }
    journal.write_run(state)
    train_config = ConfigRecord(
        {"epochs": settings.local_epochs, "learning-rate": settings.learning_rate, "batch-size": settings.batch_size}
    )
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=settings.num_rounds,
            timeout=settings.round_timeout_s,
            train_config=train_config,
            evaluate_config=ConfigRecord(),
            evaluate_fn=evaluate_fn,
        )
    except Exception as exc:
        journal.write_run(
            {**state, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "ended_at": time.time()}
        )
        raise
    final = result.arrays if len(result.arrays) else initial
    weight, bias = head_arrays(final)
    last_round_id = first_round_id + settings.num_rounds - 1
    head_path = settings.state_dir / f"head-round-{last_round_id}.npz"
    np.savez(head_path, weight=weight, bias=bias)
    outcome = RunOutcome(
        first_round_id=first_round_id,
        rounds=strategy.history,
        final_head=final,
        head_path=head_path,
        server_metrics={k: dict(v) for k, v in result.evaluate_metrics_serverapp.items()},
        client_metrics={k: dict(v) for k, v in result.evaluate_metrics_clientapp.items()},
    )
    if settings.backbone_fp32 is not None and settings.calibration is not None and description is not None:
        key = load_signing_key(settings.model_signing_key) if settings.model_signing_key else None
        version = settings.model_version or f"fl-{first_round_id}-{last_round_id}"
        metrics = dict(description.metrics)
        last = outcome.server_metrics.get(settings.num_rounds, {})
        if "holdout-accuracy" in last:
            metrics["holdout_accuracy"] = round(float(last["holdout-accuracy"]), 6)
        outcome.model = build_global_model(
            backbone_fp32=settings.backbone_fp32,
            weight=weight,
            bias=bias,
            calibration=np.load(settings.calibration).astype(np.float32),
            description=ModelDescription(**{**_fields(description), "version": version, "metrics": metrics}),
            output_dir=settings.state_dir / "models" / version,
            signing_key=key,
        )
        if registry is not None and key is not None:
            outcome.registration = publish_global_model(outcome.model, registry)
            if not registry.anchors_models:  # the hub's registry anchors on upload; else anchor here
                manifest = outcome.model.manifest
                outcome.anchor = notary.anchor_model(
                    model_anchor_id(manifest.name, manifest.version), bytes.fromhex(manifest.sha256)
                )
    outcome.seconds = time.perf_counter() - started
    journal.write_run(
        {
            **state,
            "status": "finished",
            "ended_at": time.time(),
            "last_round_id": last_round_id,
            "final_model_hash": arrays_digest(final).hex(),
            "final_head": str(head_path),
            "server_metrics": outcome.server_metrics,
            "client_metrics": outcome.client_metrics,
            "model": None
            if outcome.model is None
            else {
                "artifact": str(outcome.model.artifact),
                "sha256": outcome.model.manifest.sha256,
                "version": outcome.model.manifest.version,
                "signed": outcome.model.manifest.signature is not None,
                "anchor_tx": None if outcome.anchor is None else "0x" + bytes(outcome.anchor.tx_hash).hex(),
            },
        }
    )
    return outcome


def _fields(description: ModelDescription) -> dict[str, Any]:
    return {name: getattr(description, name) for name in description.__dataclass_fields__}
