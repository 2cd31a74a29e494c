from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.agent import EdgeAgent
from edge_agent.errors import ModelLoadError
from edge_agent.lifecycle import ModelKeeper
from edge_agent.model import LoadedModel, load_model
from edge_agent.pipeline import AgentStats
from edge_agent.settings import AgentSettings
from edge_agent.transport import Incoming, InMemoryBroker
from protocol import Command, CommandName, Kind, Topic, encode
from protocol.manifest import ModelManifest
from protocol.signing import public_key_of
from tests.fakes import fake_model
from tests.signed_models import EDGE, copy_model, write_public_key


def test_signed_models_load_and_tampered_ones_are_refused(tmp_path: Path) -> None:
    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trusted = [public_key_of(key)]
    signed = copy_model(tmp_path, version="2.0.0", key=key)
    assert load_model(signed, trusted_keys=trusted).manifest.version == "2.0.0"

    unsigned = copy_model(tmp_path, version="2.0.1")
    with pytest.raises(ModelLoadError, match="not signed"):
        load_model(unsigned, trusted_keys=trusted)
    with pytest.raises(ModelLoadError, match="trusted key"):
        load_model(copy_model(tmp_path, version="2.0.2", key=stranger), trusted_keys=trusted)

    tampered = ModelManifest.model_validate_json(signed.read_text())
    relabelled = tampered.output.model_copy(update={"labels": ["summer", "winter"]})
    signed.write_text(tampered.model_copy(update={"output": relabelled}).model_dump_json())
    with pytest.raises(ModelLoadError, match="trusted key"):
        load_model(signed, trusted_keys=trusted)

    swapped = copy_model(tmp_path / "x", version="2.0.3", key=key)
    (tmp_path / "x" / f"{EDGE}.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(swapped, trusted_keys=trusted)


def stats_with(model: tuple[str, str], *, windows: int = 0, failures: int = 0, verdicts: int = 0, agree: int = 0):
    stats = AgentStats()
    stats.windows_by_model[model] = windows
    stats.failures_by_model[model] = failures
    stats.verdicts_by_model[model] = verdicts
    stats.agreements_by_model[model] = agree
    return stats


def test_keeper_rolls_back_on_failures_and_on_worse_agreement_and_keeps_a_good_model() -> None:
    settings = AgentSettings(probation_windows=100, min_verdicts=20, max_agreement_drop=0.1, max_failure_rate=0.05)
    old, new = fake_model(), fake_model()
    new = LoadedModel(new.manifest.model_copy(update={"version": "9"}), new.backend)
    old_key, new_key = ("fake_edge", "0.0.1"), ("fake_edge", "9")

    keeper = ModelKeeper(settings)
    keeper.start(new, old, stats_with(old_key, verdicts=50, agree=45))
    assert keeper.review(stats_with(new_key, windows=5, failures=0)) is None
    review = keeper.review(stats_with(new_key, windows=18, failures=2))
    assert review is not None and review.action == "rollback" and "failures" in review.reason

    keeper.start(new, old, stats_with(old_key, verdicts=50, agree=45))  # baseline 90 %
    assert keeper.review(stats_with(new_key, windows=50, verdicts=19, agree=10)) is None  # too few verdicts yet
    review = keeper.review(stats_with(new_key, windows=50, verdicts=20, agree=15))  # 75 % < 80 %
    assert review is not None and review.action == "rollback" and "agrees" in review.reason

    keeper.start(new, old, stats_with(old_key, verdicts=50, agree=45))
    review = keeper.review(stats_with(new_key, windows=100, verdicts=20, agree=17))
    assert review is not None and review.action == "keep"
    assert keeper.rollbacks == 2
    assert keeper.probation is None


async def test_update_model_command_hot_swaps_and_a_bad_model_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    settings = AgentSettings(
        site="plant-1",
        devices=["meter-001"],
        outbox_path=tmp_path / "outbox.db",
        trusted_model_keys=[write_public_key(key, tmp_path / "model-key.pem")],
        model_manifest=copy_model(tmp_path / "v1", version="1.0.0", key=key),
    )
    model = load_model(settings.model_manifest, trusted_keys=[public_key_of(key)])
    broker = InMemoryBroker()
    command_topic = str(Topic(site="plant-1", device="meter-001", kind=Kind.COMMAND))

    def update(manifest: Path) -> Incoming:
        command = Command(
            device_id="meter-001", timestamp=1.8e9, name=CommandName.UPDATE_MODEL, args={"manifest": str(manifest)}
        )
        return Incoming(command_topic, encode(command))

    async with EdgeAgent(settings, model=model, connect=broker.connector("a"), clock=lambda: 1.8e9) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        broker.deliver(update(copy_model(tmp_path / "v2", version="2.0.0", key=key)))
        async with asyncio.timeout(5):
            while agent.pipeline.model.manifest.version != "2.0.0":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert agent.keeper.previous is not None
        assert agent.keeper.previous.manifest.version == "1.0.0"

        broker.deliver(update(copy_model(tmp_path / "v3", version="3.0.0")))  # unsigned
        broker.deliver(update(tmp_path / "missing.manifest.json"))
        async with asyncio.timeout(5):
            while agent.stats.commands["update_model"] < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert agent.pipeline.model.manifest.version == "2.0.0"
