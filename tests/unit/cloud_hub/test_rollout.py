"""The rollout state machine's pure parts, and the commands a rollout sends (fake publisher)."""

from __future__ import annotations

import hashlib
import json

import pytest

from cloud_hub.errors import ConflictError, PublishError
from cloud_hub.rollout import (
    TRANSITIONS,
    CohortStats,
    RolloutService,
    can_move,
    canary_bucket,
    decide,
    in_canary,
)
from cloud_hub.store import ModelVersion, RolloutState, Store, utc_now
from protocol.codec import decode_as
from protocol.messages import Command, CommandName
from protocol.topics import Topic


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail_for: set[str] = set()

    async def __call__(self, topic: str, payload: bytes) -> None:
        if Topic.parse(topic).device in self.fail_for:
            raise PublishError("broker gone")
        self.sent.append((topic, payload))

    def commands(self) -> list[Command]:
        return [decode_as(Command, payload, topic=Topic.parse(topic)) for topic, payload in self.sent]


def test_end_states_are_final() -> None:
    assert TRANSITIONS[RolloutState.CANARY] == {RolloutState.PROMOTED, RolloutState.ROLLED_BACK, RolloutState.ABORTED}
    for state in (RolloutState.PROMOTED, RolloutState.ROLLED_BACK, RolloutState.ABORTED):
        assert not any(can_move(state, target) for target in RolloutState)


def test_canary_assignment_is_a_stable_hash_of_the_device_id() -> None:
    devices = [f"dev-{index}" for index in range(2000)]
    share = sum(in_canary(device, 10.0) for device in devices) / len(devices)
    assert 0.08 < share < 0.12
    expected = int.from_bytes(hashlib.sha256(b"dev-7").digest()[:8], "big") / 2**64 * 100
    assert canary_bucket("dev-7") == pytest.approx(expected)
    assert all(in_canary(device, 10.0) <= in_canary(device, 50.0) for device in devices), (
        "a bigger canary keeps the smaller"
    )


@pytest.mark.parametrize(
    ("canary", "incumbent", "target", "words"),
    [
        (CohortStats(2, 5, 5, 0), CohortStats(8, 100, 90, 0), None, "waiting for 10"),
        (CohortStats(2, 50, 45, 0), CohortStats(0, 0, 0, 0), None, "no incumbent cohort"),
        (CohortStats(2, 50, 45, 0), CohortStats(8, 100, 90, 0), RolloutState.PROMOTED, "no worse"),
        (CohortStats(2, 50, 44, 0), CohortStats(8, 100, 90, 0), RolloutState.PROMOTED, "no worse"),  # within 0.02
        (CohortStats(2, 50, 40, 0), CohortStats(8, 100, 90, 0), RolloutState.ROLLED_BACK, "agrees less"),
        (CohortStats(2, 50, 45, 10), CohortStats(8, 100, 90, 1), RolloutState.ROLLED_BACK, "more errors"),
    ],
)
def test_decide(canary: CohortStats, incumbent: CohortStats, target: RolloutState | None, words: str) -> None:
    decision = decide(canary, incumbent, min_samples=10, tolerance=0.02)
    assert decision.target is target
    assert words in decision.reason


async def registered_model(store: Store) -> None:
    async with store.transaction("add a model") as session:
        session.add(
            ModelVersion(
                name="tiny_edge",
                version="edge-2",
                role="edge",
                task="classification",
                sha256="0" * 64,
                size_bytes=1,
                manifest={},
                card=None,
                artifact=b"\0",
                uploaded_at=utc_now(),
                uploaded_by=None,
            )
        )


async def test_commands_go_to_the_canary_then_the_rest(store: Store) -> None:
    await registered_model(store)
    devices = [f"dev-{index:02d}" for index in range(30)]
    for device in devices:
        await store.register_device(device, site="north", device_group="pilots")
    publisher = FakePublisher()
    service = RolloutService(store, publish=publisher, device_model_dir="/models")
    rollout = await service.create(
        model_name="tiny_edge",
        model_version="edge-2",
        device_group="pilots",
        canary_percent=20,
        incumbent_version="edge-1",
        min_samples=5,
        tolerance=0.02,
        actor="test",
    )
    canary = {device for device in devices if in_canary(device, 20)}
    first = publisher.commands()
    assert {command.device_id for command in first} == canary
    command = first[0]
    assert command.name is CommandName.UPDATE_MODEL
    assert command.args["manifest"] == "/models/tiny_edge-edge-2.manifest.json"
    assert command.args["artifact_url"] == "/api/v1/models/tiny_edge/edge-2/artifact"
    assert command.args["rollout"] == rollout.id
    assert publisher.sent[0][0] == f"edgefleet/north/{command.device_id}/command"

    publisher.sent.clear()
    publisher.fail_for = {sorted(set(devices) - canary)[0]}
    await service.promote(rollout.id, actor="test")
    rest = publisher.commands()
    assert {command.device_id for command in rest} == set(devices) - canary - publisher.fail_for
    status = await service.status(rollout.id)
    assert status.transitions[-1].detail == {"sent": len(rest), "failed": 1}
    assert service.counters.commands_failed == 1

    with pytest.raises(ConflictError, match="is promoted; it cannot become aborted"):
        await service.abort(rollout.id, actor="test")


async def test_rollback_sends_the_canary_back_to_the_incumbent(store: Store) -> None:
    await registered_model(store)
    for index in range(30):
        await store.register_device(f"dev-{index:02d}", site="north", device_group="pilots")
    publisher = FakePublisher()
    service = RolloutService(store, publish=publisher)
    rollout = await service.create(
        model_name="tiny_edge",
        model_version="edge-2",
        device_group="pilots",
        canary_percent=20,
        incumbent_version="edge-1",
        min_samples=5,
        tolerance=0.02,
        actor="test",
    )
    canary = {command.device_id for command in publisher.commands()}
    publisher.sent.clear()
    await service.abort(rollout.id, actor="test")
    back = publisher.commands()
    assert {command.device_id for command in back} == canary
    assert {command.args["version"] for command in back} == {"edge-1"}
    assert json.loads(publisher.sent[0][1])["args"]["model"] == "tiny_edge"
