from __future__ import annotations

import pytest

from cloud_hub.fl.errors import SettingsError
from cloud_hub.fl.trigger import RoundTrigger, TriggerSettings


def test_a_round_is_due_on_schedule_after_the_interval() -> None:
    trigger = RoundTrigger(TriggerSettings(interval_s=100, min_agreement=None, cooldown_s=10), last_round_at=0)
    assert trigger.due(99) is None
    assert trigger.due(100) == "schedule"
    trigger.started(100)
    assert trigger.due(150) is None


def test_drift_starts_a_round_once_the_window_is_full_and_after_the_cooldown() -> None:
    trigger = RoundTrigger(
        TriggerSettings(interval_s=None, min_agreement=0.8, window=10, cooldown_s=50), last_round_at=0
    )
    for agreed in [True] * 7 + [False] * 2:
        trigger.observe(agreed=agreed)
    assert trigger.agreement is None and trigger.due(100) is None  # 9 verdicts: not judged yet
    trigger.observe(agreed=False)
    assert trigger.agreement == pytest.approx(0.7)
    assert trigger.due(40) is None  # cooling down
    assert trigger.due(60) == "drift"
    trigger.started(60)
    assert trigger.agreement is None and trigger.due(200) is None


def test_a_drift_reported_by_the_hub_starts_a_round_after_the_cooldown() -> None:
    trigger = RoundTrigger(TriggerSettings(interval_s=None, min_agreement=None, cooldown_s=30), last_round_at=0)
    trigger.report_drift()
    assert trigger.due(10) is None
    assert trigger.due(30) == "drift"
    trigger.started(30)
    assert trigger.due(100) is None


def test_trigger_settings_are_checked() -> None:
    with pytest.raises(SettingsError):
        TriggerSettings(min_agreement=1.5)
    with pytest.raises(SettingsError):
        TriggerSettings(interval_s=0)
