"""The hub's settings: one typed object, validated at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from protocol.broker import BrokerSettings
from protocol.errors import TopicError
from protocol.settings import DeployableSettings
from protocol.topics import check_segment

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/edgefleet-hub.db"


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
    demo_mode: bool = Field(default=False, description="Marks a demonstration instance (reported by /health).")

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
