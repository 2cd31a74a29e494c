"""The REST API on a real PostgreSQL, in a schema of its own that is dropped afterwards.

The backend-independent API tests (tests/unit/cloud_hub/test_api.py, test_api_hub.py, test_access.py)
run here again: they are imported below, and take this module's ``hub_settings`` fixture.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud_hub.settings import HubSettings
from tests.services import POSTGRES_URL, missing, postgres_reachable
from tests.unit.cloud_hub.conftest import hub, judging_hub, signing_key, tiny_manifest  # noqa: F401 - fixtures
from tests.unit.cloud_hub.hub import ApiHub
from tests.unit.cloud_hub.test_access import (  # noqa: F401 - collected again here, on PostgreSQL
    test_a_device_acts_only_as_itself,
    test_device_tokens_need_a_device,
    test_no_token_is_401_with_a_challenge,
    test_only_admins_send_escalations_for_others,
    test_privileged_actions_are_audited,
    test_rate_limit_is_per_token_with_retry_after,
    test_the_bootstrap_admin_token_works,
    test_tokens_are_stored_hashed_and_can_be_revoked,
    test_wrong_scope_is_403,
)
from tests.unit.cloud_hub.test_api import (  # noqa: F401 - collected again here, on PostgreSQL
    seeded,
    test_bad_queries_are_422,
    test_get_device,
    test_list_devices,
    test_list_devices_of_a_site_page_by_page,
    test_list_events_with_filters,
    test_register_a_device_into_a_group,
    test_stats_and_agreement,
    test_unknown_device_is_404_with_a_reason,
)
from tests.unit.cloud_hub.test_api_hub import (  # noqa: F401 - collected again here, on PostgreSQL
    test_drift_alert_and_trigger_through_the_api,
    test_https_escalation_is_judged_stored_and_answered_once,
    test_rollout_abort_and_unknown_model,
    test_rollout_canary_then_promoted_by_the_figures,
    test_rollout_rolled_back_when_the_canary_is_worse,
    test_same_version_with_other_bytes_is_409,
    test_the_hub_evaluates_open_rollouts_by_itself,
    test_upload_list_card_and_download,
    test_uploads_that_do_not_check_out_are_422,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def hub_settings(tmp_path: Path) -> AsyncIterator[HubSettings]:
    if not postgres_reachable():
        missing("PostgreSQL at 127.0.0.1:5432")
    schema = f"hub_api_{secrets.token_hex(6)}"
    admin = create_async_engine(POSTGRES_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield HubSettings(
                database_url=POSTGRES_URL, database_schema=schema, model_manifest=tmp_path / "absent.json"
            )
        finally:
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await admin.dispose()


async def test_the_api_runs_on_postgresql(hub: ApiHub) -> None:  # noqa: F811 - the fixture imported above
    assert hub.store.dialect == "postgresql"
    async with hub.store.engine.connect() as connection:
        assert str(await connection.scalar(text("SELECT current_schema()"))).startswith("hub_api_")
