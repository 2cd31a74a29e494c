"""``edgefleet hub token create|list|revoke`` against a SQLite hub database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from cloud_hub.auth import Authenticator, list_audit
from cloud_hub.store import Scope, Store
from edgefleet.cli import app


def test_create_list_and_revoke(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    config = tmp_path / "edgefleet.toml"
    config.write_text(f'[hub]\ndatabase_url = "sqlite+aiosqlite:///{database}"\n')
    runner = CliRunner()

    created = runner.invoke(
        app, ["hub", "token", "create", "--scope", "device", "--device", "dev-1", "-c", str(config)]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[0]
    assert secret.startswith("efh_") and len(secret) == 47

    async def check() -> None:
        async with Store.open(f"sqlite+aiosqlite:///{database}") as store:
            principal = await Authenticator(store).authenticate(secret)
            assert principal is not None
            assert (principal.scope, principal.device_id) == (Scope.DEVICE, "dev-1")
            entries = (await list_audit(store)).items
            assert [entry.action for entry in entries] == ["cli token create"]

    asyncio.run(check())

    listing = runner.invoke(app, ["hub", "token", "list", "-c", str(config)])
    assert "device\tdev-1\tlive" in listing.stdout
    assert secret not in listing.stdout
    assert runner.invoke(app, ["hub", "token", "revoke", "1", "-c", str(config)]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["hub", "token", "list", "-c", str(config)]).stdout


def test_bad_requests_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "edgefleet.toml"
    config.write_text(f'[hub]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "hub.db"}"\n')
    runner = CliRunner()
    assert runner.invoke(app, ["hub", "token", "create", "--scope", "root", "-c", str(config)]).exit_code == 2
    missing_device = runner.invoke(app, ["hub", "token", "create", "--scope", "device", "-c", str(config)])
    assert missing_device.exit_code == 2
    assert "--device" in missing_device.output
    assert runner.invoke(app, ["hub", "token", "revoke", "99", "-c", str(config)]).exit_code == 2
