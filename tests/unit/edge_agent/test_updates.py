"""The model fetcher and the agent's update path, over an in-memory hub and in-memory anchors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.agent import EdgeAgent
from edge_agent.model import load_model, read_manifest
from edge_agent.settings import AgentSettings, UpdateSettings
from edge_agent.transport import Incoming, InMemoryBroker
from edge_agent.updates import (
    HubRefusedError,
    HubUnavailableError,
    InMemoryAnchors,
    InMemoryHub,
    ModelFetcher,
    ModelUpdater,
    UpdateError,
    UpdateRequest,
    UrllibHub,
)
from protocol import Command, CommandName, Kind, Topic, decode, encode
from protocol.messages import CommandReply, ReplyStatus
from protocol.signing import public_key_of, sign
from tests.signed_models import EDGE, MODELS, copy_model, write_public_key

MANIFEST_URL = "/api/v1/models/{name}/{version}/manifest"
ARTIFACT_URL = "/api/v1/models/{name}/{version}/artifact"


def published_model(hub: InMemoryHub, key: Ed25519PrivateKey, version: str, *, artifact: bytes | None = None) -> bytes:
    """Put a signed copy of the committed edge model on the in-memory hub; its sha256."""
    data = (MODELS / f"{EDGE}.onnx").read_bytes()
    manifest = sign(read_manifest(MODELS / f"{EDGE}.manifest.json").model_copy(update={"version": version}), key)
    hub.files[MANIFEST_URL.format(name=EDGE, version=version)] = manifest.model_dump_json().encode()
    hub.files[ARTIFACT_URL.format(name=EDGE, version=version)] = data if artifact is None else artifact
    return bytes.fromhex(manifest.sha256)


def request(version: str) -> UpdateRequest:
    return UpdateRequest(
        model=EDGE,
        version=version,
        manifest_url=MANIFEST_URL.format(name=EDGE, version=version),
        artifact_url=ARTIFACT_URL.format(name=EDGE, version=version),
    )


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def fetcher(
    tmp_path: Path,
    hub: InMemoryHub,
    key: Ed25519PrivateKey,
    anchors: InMemoryAnchors | None = None,
    **settings: object,
) -> ModelFetcher:
    values: dict[str, object] = {"hub_url": "http://hub.invalid", "model_dir": tmp_path / "models", "retries": 2}
    values.update(settings)
    return ModelFetcher(
        UpdateSettings.model_validate(values),
        hub=hub,
        anchors=anchors,
        trusted_keys=[public_key_of(key)],
        sleep=no_sleep,
    )


async def test_a_model_is_fetched_checked_on_chain_and_staged_whole(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    hub = InMemoryHub()
    digest = published_model(hub, key, "2.0.0")
    anchors = InMemoryAnchors({f"{EDGE}@2.0.0": digest})
    models = fetcher(tmp_path, hub, key, anchors)
    manifest_path = await models.fetch(request("2.0.0"))
    assert manifest_path == tmp_path / "models" / f"{EDGE}-2.0.0" / f"{EDGE}-2.0.0.manifest.json"
    assert load_model(manifest_path, trusted_keys=[public_key_of(key)]).manifest.version == "2.0.0"
    assert models.anchor_checks == 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [f"{EDGE}-2.0.0"], "no staging left behind"


async def test_a_model_whose_anchor_differs_or_is_missing_is_refused_before_the_download(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    hub = InMemoryHub()
    published_model(hub, key, "2.0.0")
    anchors = InMemoryAnchors({f"{EDGE}@2.0.0": hashlib.sha256(b"another model").digest()})
    with pytest.raises(UpdateError, match="differs from the anchored"):
        await fetcher(tmp_path, hub, key, anchors).fetch(request("2.0.0"))
    with pytest.raises(UpdateError, match="not anchored on chain"):
        await fetcher(tmp_path, hub, key, InMemoryAnchors()).fetch(request("2.0.0"))
    assert ARTIFACT_URL.format(name=EDGE, version="2.0.0") not in hub.requests
    assert not (tmp_path / "models" / f"{EDGE}-2.0.0").exists()


async def test_a_tampered_artifact_is_refused_and_nothing_is_left_where_models_load_from(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    hub = InMemoryHub()
    data = bytearray((MODELS / f"{EDGE}.onnx").read_bytes())
    data[100] ^= 0xFF
    digest = published_model(hub, key, "2.0.0", artifact=bytes(data))
    with pytest.raises(UpdateError, match="the artifact's sha256 is"):
        await fetcher(tmp_path, hub, key, InMemoryAnchors({f"{EDGE}@2.0.0": digest})).fetch(request("2.0.0"))
    hub.files[ARTIFACT_URL.format(name=EDGE, version="2.0.0")] = bytes(data) + b"more"
    with pytest.raises(UpdateError, match="larger than"):
        await fetcher(tmp_path, hub, key).fetch(request("2.0.0"))
    assert list((tmp_path / "models").iterdir()) == []


async def test_manifests_that_do_not_fit_are_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    hub = InMemoryHub()
    published_model(hub, key, "2.0.0")
    path = MANIFEST_URL.format(name=EDGE, version="2.0.0")
    good = hub.files[path]
    hub.files[path] = b"{not json"
    with pytest.raises(UpdateError, match=r"manifest of .* is invalid"):
        await fetcher(tmp_path, hub, key).fetch(request("2.0.0"))
    manifest = read_manifest(MODELS / f"{EDGE}.manifest.json").model_copy(update={"version": "2.0.0"})
    hub.files[path] = manifest.model_dump_json().encode()
    with pytest.raises(UpdateError, match="not signed"):
        await fetcher(tmp_path, hub, key).fetch(request("2.0.0"))
    hub.files[path] = sign(manifest.model_copy(update={"artifact": "../escape.onnx"}), key).model_dump_json().encode()
    with pytest.raises(UpdateError, match="outside its directory"):
        await fetcher(tmp_path, hub, key).fetch(request("2.0.0"))
    hub.files[path] = good
    hub.files[MANIFEST_URL.format(name=EDGE, version="3.0.0")] = good
    with pytest.raises(UpdateError, match=r"sent the manifest of .* 2.0.0 for model .* 3.0.0"):
        await fetcher(tmp_path, hub, key).fetch(request("3.0.0"))
    with pytest.raises(UpdateError, match="more than this device takes"):
        await fetcher(tmp_path, hub, key, max_download_bytes=1000).fetch(request("2.0.0"))


async def test_network_errors_are_retried_and_refusals_are_not(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    hub = InMemoryHub(failures=2)
    published_model(hub, key, "2.0.0")
    models = fetcher(tmp_path, hub, key, discover_chain=False)
    assert (await models.fetch(request("2.0.0"))).exists()
    assert models.attempts == 4, "two failures, then the manifest and the artifact"
    hub.failures = 5
    with pytest.raises(UpdateError, match="gave up after 3 attempts"):
        await fetcher(tmp_path, hub, key, discover_chain=False).fetch(request("2.0.0"))
    hub.failures = 0
    stranger = fetcher(tmp_path, hub, key, discover_chain=False)
    with pytest.raises(HubRefusedError, match="404"):
        await stranger.fetch(request("9.9.9"))
    assert stranger.attempts == 1


async def test_the_chain_is_discovered_from_the_hub_and_a_pinned_contract_is_enforced(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    hub = InMemoryHub()
    published_model(hub, key, "2.0.0")
    # A hub without a chain answers 404: updates go on unanchored unless the device requires anchors.
    assert await fetcher(tmp_path, hub, key).anchors() is None
    with pytest.raises(UpdateError, match="no chain is known"):
        await fetcher(tmp_path, hub, key, require_anchor=True).fetch(request("2.0.0"))
    hub.files["/api/v1/chain"] = json.dumps(
        {"rpc_url": "http://127.0.0.1:9", "contract_address": "0x" + "12" * 20}
    ).encode()
    reader = await fetcher(tmp_path, hub, key).anchors()
    assert reader is not None and reader.contract_address == "0x" + "12" * 20
    with pytest.raises(UpdateError, match="trusts only"):
        await fetcher(tmp_path, hub, key, contract_address="0x" + "34" * 20).anchors()


def test_commands_name_a_model_and_only_paths_on_the_hub() -> None:
    def command(**args: str | int) -> Command:
        return Command(device_id="meter-001", timestamp=1.8e9, name=CommandName.UPDATE_MODEL, args=args)

    parsed = UpdateRequest.from_command(command(model="m", version="2", rollout=3))
    assert parsed.manifest_url == "/api/v1/models/m/2/manifest"
    with pytest.raises(UpdateError, match="'version'"):
        UpdateRequest.from_command(command(model="m"))
    with pytest.raises(UpdateError, match="'model'"):
        UpdateRequest.from_command(command(model="../etc", version="1"))
    with pytest.raises(UpdateError, match="path on the hub"):
        UpdateRequest.from_command(command(model="m", version="2", artifact_url="https://elsewhere.example/x"))


# The real HTTP client, against a small local server ------------------------------------------------


@pytest.fixture
def http_hub() -> Iterator[tuple[str, list[str | None]]]:
    """A local HTTP server: /ok → 200, /missing → 404 with a problem, /busy → 503; records tokens."""
    tokens: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tokens.append(self.headers.get("Authorization"))
            status, body = {"/ok": (200, b"x" * 1000), "/missing": (404, b'{"detail": "no such model"}')}.get(
                self.path, (503, b'{"detail": "starting"}')
            )
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tokens
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_urllib_hub_sends_the_device_token_and_sorts_answers(
    http_hub: tuple[str, list[str | None]], tmp_path: Path
) -> None:
    url, tokens = http_hub
    token_file = tmp_path / "token"
    token_file.write_text("device-secret\n")
    hub = UrllibHub(url, token_file=token_file, timeout_s=5)
    assert hub.read("/ok", limit=1000) == b"x" * 1000
    assert tokens == ["Bearer device-secret"]
    with pytest.raises(UpdateError, match="larger than 999 bytes"):
        hub.read("/ok", limit=999)
    with pytest.raises(HubRefusedError, match="404: no such model") as refused:
        hub.read("/missing", limit=1000)
    assert refused.value.status == 404
    with pytest.raises(HubUnavailableError, match="503: starting"):
        hub.read("/busy", limit=1000)
    with pytest.raises(HubUnavailableError, match="cannot reach the hub"):
        UrllibHub("http://127.0.0.1:9", token_file=None, timeout_s=2).read("/ok", limit=10)
    with pytest.raises(UpdateError, match="cannot read the device token"):
        UrllibHub(url, token_file=tmp_path / "absent", timeout_s=2).read("/ok", limit=10)


# The agent's update path -------------------------------------------------------------------------


async def test_the_agent_replies_fetches_swaps_and_refuses_with_the_reason(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    settings = AgentSettings(
        site="plant-1",
        devices=["meter-001"],
        outbox_path=tmp_path / "outbox.db",
        trusted_model_keys=[write_public_key(key, tmp_path / "model-key.pem")],
        model_manifest=copy_model(tmp_path / "v1", version="1.0.0", key=key),
        updates=UpdateSettings(hub_url="http://hub.invalid", model_dir=tmp_path / "models", retries=0),
    )
    hub = InMemoryHub()
    good = published_model(hub, key, "2.0.0")
    published_model(hub, key, "3.0.0")
    anchors = InMemoryAnchors({f"{EDGE}@2.0.0": good, f"{EDGE}@3.0.0": hashlib.sha256(b"other").digest()})
    assert settings.updates is not None
    models = ModelFetcher(settings.updates, hub=hub, anchors=anchors, trusted_keys=[public_key_of(key)])
    model = load_model(settings.model_manifest, trusted_keys=[public_key_of(key)])
    broker = InMemoryBroker()
    topic = str(Topic(site="plant-1", device="meter-001", kind=Kind.COMMAND))
    agent = EdgeAgent(settings, model=model, connect=broker.connector("a"), clock=lambda: 1.8e9)
    assert agent.updater is not None
    agent.updater.fetcher = models

    def replies() -> list[CommandReply]:
        found = [decode(m.payload) for m in broker.published if "/reply" in m.topic]
        return [r for r in found if isinstance(r, CommandReply)]

    async def until(condition: object) -> None:
        async with asyncio.timeout(10):
            while not condition():  # type: ignore[operator]  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    async with agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        update = Command(
            device_id="meter-001",
            timestamp=1.8e9,
            name=CommandName.UPDATE_MODEL,
            args={"model": EDGE, "version": "2.0.0"},
        )
        broker.deliver(Incoming(topic, encode(update)))
        await until(lambda: [r.status for r in replies()] == [ReplyStatus.ACCEPTED, ReplyStatus.OK])
        assert agent.model.manifest.version == "2.0.0"
        assert agent.keeper.previous is not None and agent.keeper.previous.manifest.version == "1.0.0"
        assert all(r.command_id == update.message_id for r in replies())

        refused = update.model_copy(update={"message_id": "refused-1", "args": {"model": EDGE, "version": "3.0.0"}})
        broker.deliver(Incoming(topic, encode(refused)))
        await until(lambda: len(replies()) == 4)
        last = replies()[-1]
        assert (last.command_id, last.status) == ("refused-1", ReplyStatus.REJECTED)
        assert "differs from the anchored" in last.detail
        assert agent.model.manifest.version == "2.0.0", "the running model is kept"
    shutil.rmtree(tmp_path / "models")


async def test_an_update_that_fails_in_an_unforeseen_way_is_refused_and_the_next_one_runs(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    hub = InMemoryHub()
    published_model(hub, key, "2.0.0")
    live = [("other", "1")]
    answers: list[tuple[ReplyStatus, str]] = []

    async def broken_swap(path: Path) -> None:
        raise RuntimeError("backend exploded")

    async def swap(path: Path) -> None:
        manifest = read_manifest(path)
        live.append((manifest.name, manifest.version))

    updater = ModelUpdater(fetcher(tmp_path, hub, key, discover_chain=False), current=lambda: live[-1])
    command = Command(
        device_id="meter-001", timestamp=1.8e9, name=CommandName.UPDATE_MODEL, args={"model": EDGE, "version": "2.0.0"}
    )
    await updater.run(command, swap=broken_swap, reply=lambda _c, status, detail, _r: answers.append((status, detail)))
    assert answers[-1] == (ReplyStatus.REJECTED, "the update failed unexpectedly: RuntimeError('backend exploded')")
    await updater.run(command, swap=swap, reply=lambda _c, status, detail, _r: answers.append((status, detail)))
    assert answers[-1][0] is ReplyStatus.OK and live[-1] == (EDGE, "2.0.0")
    await updater.run(command, swap=swap, reply=lambda _c, status, detail, _r: answers.append((status, detail)))
    assert answers[-1] == (ReplyStatus.OK, "already running this version")
    assert (updater.updated, updater.refused) == (1, 1)
