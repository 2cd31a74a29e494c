"""How to reach the MQTT broker: one value object every part's settings embed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from protocol.topics import DEFAULT_ROOT


class BrokerSettings(BaseModel):
    """Broker address, credentials and the topic root. Plain data; connecting is each part's job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    root: str = DEFAULT_ROOT

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
