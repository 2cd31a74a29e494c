"""The registry anchors each uploaded model's sha256 on the notary before it stores the model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_hub.errors import ConflictError
from cloud_hub.notary import ChainSettings, ChainUnavailableError, InMemoryNotary, Receipt
from cloud_hub.registry import ModelNotAnchoredError, ModelRegistry
from cloud_hub.store import Scope, Store
from edge_agent.chain import ChainReader, NotarizationError
from protocol.manifest import ModelManifest
from protocol.notary import model_anchor_id
from protocol.signing import public_key_of, sign
from tests.unit.cloud_hub.hub import running_hub, sqlite_settings
from tests.unit.cloud_hub.test_api_hub import edge_manifest, upload_body


class FlakyNotary(InMemoryNotary):
    """An in-memory notary whose chain can be made unreachable."""

    down = False

    def anchor_model(self, model_id: str, sha256: bytes) -> Receipt:
        if self.down:
            raise ChainUnavailableError("anchoring: the chain's node did not answer: connection refused")
        return super().anchor_model(model_id, sha256)


def signed_model(key: Ed25519PrivateKey, version: str = "edge-2") -> tuple[ModelManifest, bytes]:
    manifest, artifact = edge_manifest(version)
    return sign(manifest, key), artifact


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def registry(store: Store, key: Ed25519PrivateKey, notary: InMemoryNotary | None) -> ModelRegistry:
    return ModelRegistry(store, trusted_keys=[public_key_of(key)], notary=notary)


async def test_an_upload_is_anchored_before_it_is_stored(store: Store, key: Ed25519PrivateKey) -> None:
    notary = InMemoryNotary()
    manifest, artifact = signed_model(key)
    row, created = await registry(store, key, notary).upload(manifest, artifact, uploaded_by=None)
    assert created
    assert notary.model_anchor("tiny_edge@edge-2") == hashlib.sha256(artifact).digest()
    assert row.anchor_contract == notary.address
    assert row.anchor_tx is not None and row.anchor_tx.startswith("0x") and len(row.anchor_tx) == 66
    assert row.anchor_block == 1
    again, created_again = await registry(store, key, notary).upload(manifest, artifact, uploaded_by=None)
    assert not created_again
    assert again.anchor_tx == row.anchor_tx, "a retried upload sends no second transaction"


async def test_an_unreachable_chain_refuses_the_upload_and_keeps_nothing(store: Store, key: Ed25519PrivateKey) -> None:
    notary = FlakyNotary()
    notary.down = True
    manifest, artifact = signed_model(key)
    models = registry(store, key, notary)
    with pytest.raises(ModelNotAnchoredError, match=r"not anchored on chain: .*connection refused"):
        await models.upload(manifest, artifact, uploaded_by=None)
    assert (await models.list()).total == 0
    notary.down = False
    row, created = await models.upload(manifest, artifact, uploaded_by=None)
    assert created and row.anchor_tx is not None


async def test_an_anchor_left_by_an_interrupted_upload_is_taken(store: Store, key: Ed25519PrivateKey) -> None:
    notary = InMemoryNotary()
    manifest, artifact = signed_model(key)
    notary.anchor_model(model_anchor_id(manifest.name, manifest.version), bytes.fromhex(manifest.sha256))
    row, created = await registry(store, key, notary).upload(manifest, artifact, uploaded_by=None)
    assert created
    assert (row.anchor_contract, row.anchor_tx, row.anchor_block) == (notary.address, None, None)


async def test_an_id_anchored_with_other_bytes_is_a_conflict(store: Store, key: Ed25519PrivateKey) -> None:
    notary = InMemoryNotary()
    manifest, artifact = signed_model(key)
    notary.anchor_model("tiny_edge@edge-2", hashlib.sha256(b"other weights").digest())
    models = registry(store, key, notary)
    with pytest.raises(ConflictError, match=r"anchored on chain .* give the model a new version"):
        await models.upload(manifest, artifact, uploaded_by=None)
    assert (await models.list()).total == 0


async def test_a_model_registered_before_the_notary_is_anchored_when_uploaded_again(
    store: Store, key: Ed25519PrivateKey
) -> None:
    manifest, artifact = signed_model(key)
    row, _ = await registry(store, key, None).upload(manifest, artifact, uploaded_by=None)
    assert row.anchor_contract is None
    notary = InMemoryNotary()
    row, created = await registry(store, key, notary).upload(manifest, artifact, uploaded_by=None)
    assert not created
    assert row.anchor_contract == notary.address
    assert (await registry(store, key, notary).get(manifest.name, manifest.version)).anchor_tx == row.anchor_tx


async def test_the_hub_anchors_on_its_in_process_evm_and_tells_devices_where(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    public = tmp_path / "trusted.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    settings = sqlite_settings(tmp_path, trusted_model_keys=[public], chain=ChainSettings())
    manifest, artifact = signed_model(key)
    async with running_hub(settings) as hub:
        async with hub.client(Scope.OPERATOR) as operator:
            created = await operator.post("/api/v1/models", json=upload_body(manifest, artifact))
            card = (await operator.get("/api/v1/models/tiny_edge/edge-2")).json()
        async with hub.client(Scope.DEVICE, device="dev-1") as device:
            chain = (await device.get("/api/v1/chain")).json()
        assert created.status_code == 201, created.text
        anchor = created.json()["anchor"]
        assert anchor["model_id"] == "tiny_edge@edge-2"
        assert anchor["contract"] == chain["contract_address"]
        assert anchor["tx_hash"].startswith("0x")
        assert card["model"]["anchor"] == anchor
        # A device reads the anchor over JSON-RPC, without web3, from the URL the hub gave it.
        reader = ChainReader(chain["rpc_url"], chain["contract_address"])
        await reader.check_model("tiny_edge@edge-2", bytes.fromhex(manifest.sha256))
        with pytest.raises(NotarizationError, match="differs from the anchored"):
            await reader.check_model("tiny_edge@edge-2", hashlib.sha256(b"tampered").digest())


async def test_a_hub_without_a_notary_has_no_chain_to_show(tmp_path: Path) -> None:
    async with running_hub(sqlite_settings(tmp_path)) as hub, hub.client(Scope.DEVICE, device="dev-1") as device:
        response = await device.get("/api/v1/chain")
    assert response.status_code == 404
    assert "anchors no models" in response.json()["detail"]


async def test_the_api_answers_503_with_the_reason_when_the_chain_is_down(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    public = tmp_path / "trusted.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    manifest, artifact = signed_model(key)
    async with running_hub(sqlite_settings(tmp_path, trusted_model_keys=[public])) as hub:
        notary = FlakyNotary()
        notary.down = True
        hub.services.registry.notary = notary
        async with hub.client(Scope.OPERATOR) as operator:
            refused = await operator.post("/api/v1/models", json=upload_body(manifest, artifact))
            listing = (await operator.get("/api/v1/models")).json()
            notary.down = False
            accepted = await operator.post("/api/v1/models", json=upload_body(manifest, artifact))
    assert refused.status_code == 503
    assert "not anchored on chain" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "5"
    assert listing["total"] == 0, "nothing of a refused upload is kept"
    assert accepted.status_code == 201
    assert accepted.json()["anchor"]["contract"] == notary.address
