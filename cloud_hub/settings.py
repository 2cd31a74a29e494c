"""The hub's settings: one typed object, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from cloud_hub.fl.settings import HubFederationSettings
from cloud_hub.notary.settings import ChainSettings
from protocol.broker import BrokerSettings
from protocol.errors import TopicError
from protocol.settings import DeployableSettings
from protocol.topics import check_segment

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/edgefleet-hub.db"
PLACEHOLDER_SECRETS = frozenset({"", "admin", "changeme", "change-me", "secret", "password", "token", "demo", "test"})
"""Values a secret must not have outside demo mode (compared case-insensitively)."""
MIN_SECRET_LENGTH = 32


class HubSettings(DeployableSettings):
    """Settings of ``edgefleet hub serve``; TOML table ``[hub]``, environment ``EDGEFLEET_HUB_*``.

    A SQLite database file's directory is created when the store opens it.
    """

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_HUB_", env_nested_delimiter="__", extra="forbid")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        min_length=1,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db.",
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL only: the schema (search_path) the hub's tables live in; it must exist.",
    )
    broker: BrokerSettings = BrokerSettings()
    share_group: str | None = Field(
        default="hub",
        description=(
            "MQTT shared-subscription group for escalations, so that several hub workers share the load. "
            "Empty (or unset in the environment as '') for a plain subscription, for brokers without "
            "shared subscriptions."
        ),
    )
    model_manifest: Path = Path("models/quantized/italy_power_cloud_fp32.manifest.json")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port.")
    threads: int = Field(default=1, ge=1, le=64, description="Intra-op threads of the inference session.")
    max_batch: int = Field(default=32, ge=1, le=4096, description="Most escalations judged in one batch.")
    max_wait_ms: float = Field(default=5.0, ge=0.0, le=10_000.0, description="Longest wait to fill a batch.")
    demo_mode: bool = Field(
        default=False,
        description="A demonstration instance: placeholder secrets and unsigned model uploads are accepted.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=(
            "A bootstrap admin API token, registered (hashed) at start. Outside demo mode it must be at least "
            f"{MIN_SECRET_LENGTH} characters and no placeholder; 'edgefleet hub token create' makes good ones."
        ),
    )
    trusted_model_keys: list[Path] = Field(
        default_factory=list, description="PEM files of the Ed25519 keys whose model signatures the hub accepts."
    )
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Largest model artifact accepted.")
    rate_limit_per_s: float = Field(default=50.0, gt=0.0, description="Requests a token may make a second, sustained.")
    rate_limit_burst: int = Field(default=100, ge=1, description="Requests a token may make at once after a pause.")
    rollout_interval_s: float = Field(default=30.0, gt=0.0, description="How often open rollouts are evaluated.")
    rollout_min_samples: int = Field(default=50, ge=1, description="Verdicts each cohort needs before a decision.")
    rollout_tolerance: float = Field(
        default=0.02, ge=0.0, le=1.0, description="How much worse than the incumbent a canary may be and pass."
    )
    device_model_dir: str = Field(
        default="/var/lib/edgefleet/models",
        description="Where devices keep staged models; update_model commands name the manifest there.",
    )
    chain: ChainSettings | None = Field(
        default=None,
        description=(
            "The notary the registry anchors every uploaded model's sha256 on (table [hub.chain], the same keys "
            "as [chain]); none anchors nothing. An empty table runs an in-process EVM."
        ),
    )
    chain_read_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="With the in-process EVM: the port its reads are served on for devices (0 picks a free one).",
    )
    chain_public_url: str | None = Field(
        default=None,
        description="The JSON-RPC URL devices are told to check anchors at (GET /api/v1/chain); none: the chain's.",
    )
    fl: HubFederationSettings | None = Field(
        default=None,
        description="Federated learning (table [hub.fl]): the runs' journal, the SuperLink, drift-started runs.",
    )
    drift_interval_s: float = Field(default=60.0, gt=0.0, description="How often drift is checked.")
    drift_reference_size: int = Field(default=200, ge=10, description="Observations in a reference sample.")
    drift_window: int = Field(default=200, ge=10, description="Newest observations compared with the reference.")
    drift_psi_threshold: float = Field(default=0.25, gt=0.0, description="PSI above which a metric has drifted.")
    drift_ks_alpha: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="KS p-value below which a metric has drifted (with the PSI)."
    )

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> HubSettings:
        if self.demo_mode:
            return self
        secrets = {"admin_token": self.admin_token, "broker.password": self.broker.password}
        for name, secret in secrets.items():
            if secret is None:
                continue
            value = secret.get_secret_value()
            too_short = name == "admin_token" and len(value) < MIN_SECRET_LENGTH
            if value.strip().lower() in PLACEHOLDER_SECRETS or too_short:
                raise ValueError(
                    f"{name} is a default or placeholder secret (or shorter than {MIN_SECRET_LENGTH} characters); "
                    "the hub refuses to start with it outside demo mode"
                )
        return self

    def engine_options(self) -> dict[str, Any]:
        """Options for the database engine that follow from these settings."""
        if self.database_schema is None or not self.database_url.startswith("postgresql"):
            return {}
        return {"connect_args": {"server_settings": {"search_path": self.database_schema}}}

    @field_validator("share_group", mode="before")
    @classmethod
    def _empty_means_plain(cls, value: object) -> object:
        # TOML has no null: an empty string (or "none") selects a plain subscription.
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("share_group")
    @classmethod
    def _valid_group(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_segment(value, "share group")
        except TopicError as exc:
            raise ValueError(exc.reason) from exc
