"""The federated run's settings: the ServerApp's run config (``[tool.flwr.app.config]``, ``--run-config``).

Flower hands the run config over as a flat mapping with dashed keys; :class:`RunSettings` validates it
once, at the start of the run, so a typo fails the run before any device trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloud_hub.fl.errors import SettingsError

StrategyName = Literal["fedavg", "fedgeomedian", "fedmedian", "fedtrimmedavg", "multikrum"]
ROBUST_DEFAULT: StrategyName = "fedgeomedian"
INLIER_RADIUS = 1.25
"""FedGeoMedian's default radius, in median distances to the geometric median (docs/federated.md: 2 let
unscaled sign flips in; 1.25 leaves them out and drops a few honest updates of clean rounds)."""


class RunSettings(BaseModel):
    """One federated run (all paths may be relative to the directory the SuperLink runs in)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=lambda name: name.replace("_", "-"))

    num_rounds: int = Field(default=3, ge=1, le=10_000)
    strategy: StrategyName = "fedavg"
    min_nodes: int = Field(default=2, ge=1, description="Nodes a round waits for (train and evaluate).")
    fraction_train: float = Field(default=1.0, gt=0.0, le=1.0)
    fraction_evaluate: float = Field(default=1.0, ge=0.0, le=1.0)
    inlier_radius: float = Field(
        default=INLIER_RADIUS,
        ge=0.0,
        description="FedGeoMedian: updates kept within this × the median distance; 0: the median.",
    )
    trim_beta: float = Field(default=0.2, ge=0.0, lt=0.5, description="FedTrimmedAvg: share cut at each end.")
    krum_malicious: int = Field(default=1, ge=0, description="MultiKrum: attackers tolerated.")
    krum_select: int = Field(default=2, ge=1, description="MultiKrum: updates averaged.")
    local_epochs: int = Field(default=5, ge=1, le=1000)
    learning_rate: float = Field(default=0.05, gt=0.0)
    batch_size: int = Field(default=32, ge=1)
    round_timeout_s: float = Field(default=600.0, gt=0.0)
    first_round_id: int = Field(default=0, ge=0, description="0: the round after the journal's last one.")
    device_keys: Path = Field(description="Directory of <device-id>.pem Ed25519 public keys.")
    initial_head: Path = Field(description="The starting head (.npz with weight and bias).")
    state_dir: Path = Field(description="Where the run journals its rounds and writes the final head.")
    backbone_fp32: Path | None = Field(default=None, description="Build the next edge model from this backbone.")
    calibration: Path | None = Field(default=None, description="Windows (.npy) that calibrate int8 quantization.")
    model_signing_key: Path | None = Field(default=None, description="Ed25519 PEM key that signs the next model.")
    model_version: str = Field(default="", description="Version of the next model; empty: the run's round ids.")
    task_description: Path | None = Field(
        default=None,
        description="The task's federated description (labels, input, nodes kept fp32) from models/federated.py.",
    )
    chain: Literal["memory", "evm"] = Field(
        default="memory", description="memory: the in-memory notary (tests, demos); evm: the notary contract."
    )
    chain_url: str = Field(default="", description="Ethereum JSON-RPC URL; empty runs an EVM inside the ServerApp.")
    chain_contract: str = Field(default="", description="The deployed notary contract's address.")
    chain_key_file: Path | None = Field(default=None, description="Hex private key of the hub's notary account.")
    hub_url: str = Field(
        default="", description="Register the next model with this hub's API; empty: state-dir/registry."
    )
    hub_token_file: Path | None = Field(default=None, description="File holding an API token of the models scope.")
    backbone_int8: Path | None = Field(default=None, description="The devices' backbone, for the hub's held-out check.")
    holdout: Path | None = Field(default=None, description="Held-out windows and labels (.npz: windows, labels).")

    @classmethod
    def from_run_config(cls, run_config: dict[str, object]) -> RunSettings:
        """Validate Flower's run config; empty strings stand for unset optional paths."""
        values = {key: value for key, value in run_config.items() if value != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(f"invalid federated run config: {exc}") from exc


RunConfigValue = str | int | float | bool


def _run_config_keys() -> frozenset[str]:
    return frozenset(field.alias or name for name, field in RunSettings.model_fields.items())


class HubFederationSettings(BaseModel):
    """The hub's side of federated learning (table ``[hub.fl]``): where runs journal, how to start one.

    ``state_dir`` is the run config's ``state-dir`` of the runs the hub starts, so the journal the ServerApp
    writes is the one the hub reads (``GET /api/v1/fl/rounds``); the round ledger is under ``state_dir/ledger``.
    Without ``connection`` the hub reads rounds but starts none (``POST /api/v1/fl/runs`` answers 503).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path = Field(description="The runs' state directory: rounds.jsonl, run.json and ledger/.")
    connection: str | None = Field(
        default=None,
        min_length=1,
        description="The flwr SuperLink connection runs are submitted to (a [superlink.NAME] of FLWR_HOME's config).",
    )
    flwr_home: Path | None = Field(default=None, description="FLWR_HOME of the flwr CLI; none: the environment's.")
    app_dir: Path | None = Field(default=None, description="The Flower app submitted; none: the packaged one.")
    run_config: dict[str, RunConfigValue] = Field(
        default_factory=dict,
        description="Run-config overrides of every run the hub starts (dashed keys, as in --run-config).",
    )
    drift_rounds: bool = Field(
        default=False, description="Start a run when the drift monitor opens a retraining trigger (off by default)."
    )
    interval_s: float | None = Field(default=None, gt=0.0, description="Also start a run this long after the last.")
    cooldown_s: float = Field(default=3600.0, ge=0.0, description="No run starts on its own sooner after the last.")
    check_interval_s: float = Field(default=30.0, gt=0.0, description="How often the hub asks whether a run is due.")
    status_timeout_s: float = Field(default=30.0, gt=0.0, description="Longest wait for the SuperLink's answer.")

    @field_validator("run_config")
    @classmethod
    def _known_keys(cls, values: dict[str, RunConfigValue]) -> dict[str, RunConfigValue]:
        unknown = sorted(set(values) - _run_config_keys())
        if unknown:
            raise ValueError(f"unknown run-config keys: {', '.join(unknown)}")
        if "state-dir" in values:
            raise ValueError("set state_dir of [hub.fl], not run_config's state-dir: the hub reads its journal there")
        return values
