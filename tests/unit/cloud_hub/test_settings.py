from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud_hub.settings import DEFAULT_DATABASE_URL, HubSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("EDGEFLEET_HUB_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = HubSettings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.share_group == "hub"
    assert settings.model_manifest == Path("models/quantized/italy_power_cloud_fp32.manifest.json")
    assert (settings.host, settings.port, settings.threads) == ("127.0.0.1", 8000, 1)
    assert (settings.max_batch, settings.max_wait_ms, settings.demo_mode) == (32, 5.0, False)
    assert settings.broker.port == 1883


def test_environment_overrides_file_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_HUB_PORT", "9001")
    monkeypatch.setenv("EDGEFLEET_HUB_BROKER__PORT", "18830")
    settings = HubSettings(port=8100, max_batch=8)  # what the TOML file said
    assert settings.port == 9001
    assert settings.broker.port == 18830
    assert settings.max_batch == 8


@pytest.mark.parametrize("value", ["", "none", "None"])
def test_empty_share_group_means_plain_subscription(value: str) -> None:
    assert HubSettings(share_group=value).share_group is None


@pytest.mark.parametrize("values", [{"share_group": "two words"}, {"max_batch": 0}, {"port": 70000}, {"colour": "x"}])
def test_invalid_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HubSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", ["changeme", "admin", "short-but-not-a-placeholder"])
def test_placeholder_secrets_are_refused_outside_demo_mode(secret: str) -> None:
    with pytest.raises(ValidationError, match="refuses to start with it outside demo mode"):
        HubSettings(admin_token=secret)
    assert HubSettings(admin_token=secret, demo_mode=True).demo_mode


def test_a_placeholder_broker_password_is_refused_outside_demo_mode() -> None:
    with pytest.raises(ValidationError, match=r"broker\.password"):
        HubSettings(broker={"password": "changeme"})


def test_a_strong_admin_token_is_accepted() -> None:
    settings = HubSettings(admin_token="efh_" + "k" * 43)
    assert settings.admin_token is not None
