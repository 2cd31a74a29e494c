"""The edge agent's settings: one typed object, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from protocol.broker import BrokerSettings
from protocol.messages import SensorKind
from protocol.settings import DeployableSettings


class SensorRange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    minimum: float
    maximum: float


DEFAULT_RANGES: dict[SensorKind, SensorRange] = {
    SensorKind.TEMPERATURE: SensorRange(minimum=-60.0, maximum=150.0),
    SensorKind.HUMIDITY: SensorRange(minimum=0.0, maximum=100.0),
    SensorKind.POWER: SensorRange(minimum=0.0, maximum=100_000.0),
    SensorKind.CURRENT: SensorRange(minimum=-1_000.0, maximum=1_000.0),
    SensorKind.VOLTAGE: SensorRange(minimum=-1_000.0, maximum=1_000.0),
    SensorKind.VIBRATION: SensorRange(minimum=-500.0, maximum=500.0),
    SensorKind.ACCELERATION: SensorRange(minimum=-160.0, maximum=160.0),
    SensorKind.ANGULAR_VELOCITY: SensorRange(minimum=-35.0, maximum=35.0),
    SensorKind.SOUND_LEVEL: SensorRange(minimum=0.0, maximum=194.0),
    SensorKind.GENERIC: SensorRange(minimum=-1e12, maximum=1e12),
}


class ValidationSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ranges: dict[SensorKind, SensorRange] = Field(default_factory=lambda: dict(DEFAULT_RANGES))
    max_age_s: float = Field(default=300.0, gt=0, description="Readings older than this are stale.")
    max_future_s: float = Field(default=5.0, ge=0, description="Clock skew tolerated for readings from the future.")
    duplicate_memory: int = Field(default=4096, ge=16, description="Recent message ids remembered per device.")


class PolicySettings(BaseModel):
    """When the agent escalates a window to the hub."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_confidence: float = Field(default=0.80, ge=0.0, le=1.0)
    max_anomaly_score: float = Field(default=2.0, gt=0.0)
    critical_labels: list[str] = Field(default_factory=list, description="Labels always escalated.")
    max_escalations_per_minute: int = Field(default=60, ge=0, description="Per device; 0 disables escalation.")
    episode_reminder_s: float = Field(
        default=300.0,
        ge=0.0,
        description="Consecutive windows of a stream firing the same rule are one episode, escalated once "
        "and again after this long; 0 escalates every window.",
    )


IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Device ids and stream names, as the topic grammar allows them."""


class CameraSettings(BaseModel):
    """A camera on the device, read through OpenCV (the ``edge-camera`` extra), gated by motion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: int | str = Field(default=0, description="OpenCV device index, or a video file path or stream URL.")
    device_id: str = Field(
        default="camera", pattern=IDENTIFIER, description="Device id the camera's results are published under."
    )
    stream: str = Field(default="camera", pattern=IDENTIFIER)
    model_manifest: Path = Path("models/quantized/camera_edge_int8.manifest.json")
    fps: float | None = Field(
        default=5.0, gt=0.0, description="Frames read per second at most; None: as fast as the source gives them."
    )
    gate_threshold: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of the downscaled grey frame's pixels that must have changed since the last inferred "
        "frame for it to count as motion; 0 infers every frame the cool-down allows.",
    )
    gate_pixel_delta: float = Field(
        default=25.0, ge=0.0, le=255.0, description="Grey levels (0-255) by which a pixel must change to count."
    )
    gate_width: int = Field(default=32, ge=1, le=1024, description="Width of the frame the gate compares.")
    gate_height: int = Field(default=24, ge=1, le=1024)
    cooldown_s: float = Field(default=1.0, ge=0.0, description="Least time between two inferences.")
    refresh_s: float | None = Field(
        default=None, gt=0.0, description="Infer a still scene again after this long; None: only on motion."
    )


class MicrophoneSettings(BaseModel):
    """A microphone on the device, read through sounddevice (the ``edge-audio`` extra), or a WAV file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: int | str | None = Field(default=None, description="sounddevice input device; None: the default.")
    file: Path | None = Field(default=None, description="Read this 16-bit mono WAV file instead of a device.")
    device_id: str = Field(
        default="microphone", pattern=IDENTIFIER, description="Device id the microphone's results are published under."
    )
    stream: str = Field(default="microphone", pattern=IDENTIFIER)
    model_manifest: Path = Path("models/quantized/keywords_edge_int8.manifest.json")
    hop_s: float | None = Field(
        default=0.5, gt=0.0, description="Seconds between window starts; None: the model's own hop."
    )
    block_s: float = Field(default=0.1, gt=0.0, le=10.0, description="Seconds of audio read at a time.")
    min_rms_dbfs: float | None = Field(
        default=-50.0, le=0.0, description="Windows quieter than this (RMS, dB full scale) are not inferred; None: all."
    )


class UpdateSettings(BaseModel):
    """Fetching rolled-out models from the hub: table ``[agent.updates]`` (see docs/edge_agent.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hub_url: str = Field(pattern=r"^https?://", description="The hub's base URL, e.g. https://hub.example:8000.")
    token_file: Path | None = Field(
        default=None, description="File holding the device's API token (scope device); read at every update."
    )
    model_dir: Path = Field(
        default=Path("var/agent/models"), description="Where fetched models live, one directory per version."
    )
    max_download_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Largest artifact fetched.")
    timeout_s: float = Field(default=30.0, gt=0.0, description="Socket timeout of each request to the hub or chain.")
    retries: int = Field(default=4, ge=0, le=20, description="Further attempts after a network error or a 5xx.")
    backoff_s: float = Field(default=0.5, gt=0.0, description="First wait between attempts; doubles, jittered.")
    chain_url: str | None = Field(
        default=None, pattern=r"^https?://", description="JSON-RPC URL of the notary's chain; none: ask the hub."
    )
    contract_address: str | None = Field(
        default=None,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="The notary contract; pinned here, the hub's answer must name the same one.",
    )
    discover_chain: bool = Field(
        default=True, description="Without chain_url, ask the hub (GET /api/v1/chain) where its anchors are."
    )
    require_anchor: bool = Field(
        default=False,
        description="Refuse a model when no chain is known; with a chain, the anchor is always checked.",
    )


class AgentSettings(DeployableSettings):
    """Settings of ``edgefleet agent run``; TOML table ``[agent]``, environment ``EDGEFLEET_AGENT_*``."""

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_AGENT_", env_nested_delimiter="__", extra="forbid")

    site: str = "site-1"
    devices: list[str] = Field(default_factory=lambda: ["+"], description="Device ids served; '+' means all.")
    client_id: str | None = Field(default=None, description="MQTT client id; stable, so the broker keeps the session.")
    broker: BrokerSettings = BrokerSettings()
    uplink: BrokerSettings | None = Field(
        default=None, description="Broker towards the hub (escalations, verdicts); None: the same as `broker`."
    )
    outbox_path: Path = Path("var/agent/outbox.db")
    outbox_max_items: int = Field(default=100_000, ge=1)
    outbox_synchronous: Literal["normal", "full"] = Field(
        default="normal", description="'full' also survives a power cut, at a cost per write."
    )
    max_in_flight: int = Field(default=32, ge=1, le=1024, description="Publishes awaiting acknowledgement at once.")
    escalation_retry_s: float = Field(
        default=30.0, gt=0.0, description="An escalation without its verdict after this long is sent again."
    )
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535, description="/metrics and /health; None: off.")
    model_manifest: Path = Path("models/quantized/italy_power_edge_int8.manifest.json")
    backend: str = Field(default="onnxruntime", description="Inference backend.")
    fastest_variant: bool = Field(
        default=False,
        description="At start, time every edge variant of the model's task that lies beside its manifest (same "
        "input; int8 and fp32) on this device and run the fastest: int8 is slower than fp32 for small networks on "
        "some CPUs.",
    )
    trusted_model_keys: list[Path] = Field(
        default_factory=list,
        description="PEM Ed25519 public keys; when set, only models signed by one of them are loaded.",
    )
    probation_windows: int = Field(default=200, ge=1, description="Windows a new model is watched before it stays.")
    max_failure_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="Inference failures that roll back.")
    min_verdicts: int = Field(default=20, ge=1, description="Verdicts needed to compare a new model's agreement.")
    max_agreement_drop: float = Field(
        default=0.10, ge=0.0, le=1.0, description="Agreement with the hub below the old model's by this rolls back."
    )
    threads: int = Field(default=1, ge=1, le=64)
    max_batch: int = Field(default=16, ge=1, le=1024)
    max_wait_ms: float = Field(
        default=0.0,
        ge=0.0,
        description="Longest wait for more windows before a batch runs. 0: run what is ready at once; windows "
        "that complete while a batch runs still form the next batch, so batches grow with the load.",
    )
    publish_results: bool = True
    validation: ValidationSettings = ValidationSettings()
    policy: PolicySettings = PolicySettings()
    camera: CameraSettings | None = Field(default=None, description="A local camera source; None: none.")
    microphone: MicrophoneSettings | None = Field(default=None, description="A local microphone source; None: none.")
    updates: UpdateSettings | None = Field(
        default=None,
        description="Fetch rolled-out models from the hub; None: update_model loads the manifest path it names.",
    )
