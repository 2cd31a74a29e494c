"""The notary contract as both sides see it: leaf records, inclusion proofs, and the contract's ABI. Pure.

A device checks its inclusion in a federated round against the chain without web3: it builds the
calldata of the contract's read functions from the constants here, sends it with any JSON-RPC client
(``eth_call``), and decodes the answer's static 32-byte words. The selectors are the first four bytes
of the keccak-256 of each signature; they are constants because ``hashlib`` has no keccak (a test
checks them against the compiled contract's ABI).

The contract (``cloud_hub/notary/Notary.vy``):

======================================================  ===============================================
function                                                returns
======================================================  ===============================================
``get_round(uint64)``                                   root, leaf count, model hash, block, timestamp
``model_anchor(bytes32)``                               model sha256, block, timestamp
``verify_inclusion(uint64,bytes32,bytes32[],uint256)``  bool (bit *i* of the last argument: sibling *i*
                                                        sits on the left)
``commit_round(uint64,bytes32,uint64,bytes32)``         (transaction) round id, root, leaf count, model
``anchor_model(bytes32,bytes32)``                       (transaction) sha256(model id), model sha256
======================================================  ===============================================
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.merkle import DIGEST_BYTES, MerkleError, ProofStep, leaf_hash, verify_proof

WORD = 32
MAX_PROOF_STEPS = 64  # the contract's bound on a proof's length: trees of up to 2**64 leaves

SELECTOR_GET_ROUND = bytes.fromhex("10ce9893")  # get_round(uint64)
SELECTOR_MODEL_ANCHOR = bytes.fromhex("587e391a")  # model_anchor(bytes32)
SELECTOR_VERIFY_INCLUSION = bytes.fromhex("3ed64ce3")  # verify_inclusion(uint64,bytes32,bytes32[],uint256)
SELECTOR_COMMIT_ROUND = bytes.fromhex("665e6a35")  # commit_round(uint64,bytes32,uint64,bytes32)
SELECTOR_ANCHOR_MODEL = bytes.fromhex("fb974e78")  # anchor_model(bytes32,bytes32)
SELECTOR_ROUND_COUNT = bytes.fromhex("cc7949ae")  # round_count()
SELECTOR_OWNER = bytes.fromhex("8da5cb5b")  # owner()

SELECTORS: dict[str, bytes] = {
    "get_round(uint64)": SELECTOR_GET_ROUND,
    "model_anchor(bytes32)": SELECTOR_MODEL_ANCHOR,
    "verify_inclusion(uint64,bytes32,bytes32[],uint256)": SELECTOR_VERIFY_INCLUSION,
    "commit_round(uint64,bytes32,uint64,bytes32)": SELECTOR_COMMIT_ROUND,
    "anchor_model(bytes32,bytes32)": SELECTOR_ANCHOR_MODEL,
    "round_count()": SELECTOR_ROUND_COUNT,
    "owner()": SELECTOR_OWNER,
}

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_UINT64 = 2**64


class NotaryAbiError(ValueError):
    """A value does not fit the contract's ABI, or an answer from the chain is malformed."""


def model_id_hash(model_id: str) -> bytes:
    """The key a model id is anchored under: sha256 of its UTF-8 bytes."""
    if not model_id:
        raise NotaryAbiError("a model id must not be empty")
    return hashlib.sha256(model_id.encode()).digest()


def model_anchor_id(name: str, version: str) -> str:
    """The id the model registry anchors a model version under (``<name>@<version>``): hub and devices agree."""
    return f"{name}@{version}"


def check_address(address: str) -> str:
    """``address`` if it is 0x and 40 hex digits (any case: a device cannot check EIP-55 without keccak)."""
    if not _ADDRESS.match(address):
        raise NotaryAbiError(f"not an Ethereum address: {address!r}")
    return address


def _uint(value: int, limit: int, what: str) -> bytes:
    if not 0 <= value < limit:
        raise NotaryAbiError(f"{what} {value} is out of range")
    return value.to_bytes(WORD, "big")


def _bytes32(value: bytes, what: str) -> bytes:
    if len(value) != WORD:
        raise NotaryAbiError(f"{what} is {WORD} bytes, not {len(value)}")
    return bytes(value)


def encode_get_round(round_id: int) -> bytes:
    return SELECTOR_GET_ROUND + _uint(round_id, _UINT64, "round id")


def encode_model_anchor(model_id: str) -> bytes:
    return SELECTOR_MODEL_ANCHOR + model_id_hash(model_id)


def proof_sides(proof: list[ProofStep]) -> int:
    """The contract's bitmask of a proof: bit *i* set when sibling *i* sits on the left."""
    return sum(1 << i for i, step in enumerate(proof) if step.side == "left")


def encode_verify_inclusion(round_id: int, leaf: bytes, proof: list[ProofStep]) -> bytes:
    if len(proof) > MAX_PROOF_STEPS:
        raise NotaryAbiError(f"a proof has at most {MAX_PROOF_STEPS} steps, not {len(proof)}")
    head = (
        _uint(round_id, _UINT64, "round id")
        + _bytes32(leaf, "a leaf")
        + (4 * WORD).to_bytes(WORD, "big")  # offset of the dynamic array, after the four head words
        + proof_sides(proof).to_bytes(WORD, "big")
    )
    array = len(proof).to_bytes(WORD, "big") + b"".join(_bytes32(step.sibling, "a sibling") for step in proof)
    return SELECTOR_VERIFY_INCLUSION + head + array


def _words(data: bytes, count: int) -> list[bytes]:
    if len(data) < count * WORD:
        raise NotaryAbiError(f"expected {count} ABI words, got {len(data)} bytes (is the address a notary?)")
    return [data[i * WORD : (i + 1) * WORD] for i in range(count)]


def _as_uint(word: bytes, limit: int) -> int:
    value = int.from_bytes(word, "big")
    if value >= limit:
        raise NotaryAbiError(f"ABI word {word.hex()} does not fit the declared integer type")
    return value


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """A committed round as the contract stores it."""

    round_id: int
    root: bytes
    leaf_count: int
    model_hash: bytes
    block_number: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class ModelAnchor:
    """A model's anchored sha256 and when it was anchored."""

    model_id_hash: bytes
    digest: bytes
    block_number: int
    timestamp: int


def decode_get_round(round_id: int, data: bytes) -> RoundRecord | None:
    """The answer of ``get_round``; None when the round is not committed (all zero)."""
    root, count, model_hash, block, timestamp = _words(data, 5)
    if root == bytes(WORD):
        return None
    return RoundRecord(
        round_id=round_id,
        root=root,
        leaf_count=_as_uint(count, _UINT64),
        model_hash=model_hash,
        block_number=_as_uint(block, _UINT64),
        timestamp=_as_uint(timestamp, _UINT64),
    )


def decode_model_anchor(model_id: str, data: bytes) -> ModelAnchor | None:
    """The answer of ``model_anchor``; None when the model is not anchored."""
    digest, block, timestamp = _words(data, 3)
    if digest == bytes(WORD):
        return None
    return ModelAnchor(
        model_id_hash=model_id_hash(model_id),
        digest=digest,
        block_number=_as_uint(block, _UINT64),
        timestamp=_as_uint(timestamp, _UINT64),
    )


def decode_bool(data: bytes) -> bool:
    (word,) = _words(data, 1)
    return _as_uint(word, 2) == 1


Digest = Annotated[bytes, Field(min_length=DIGEST_BYTES, max_length=DIGEST_BYTES)]
DeviceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class LeafRecord(BaseModel):
    """One device's signed update in a round: what a leaf is made of (bytes as hex in JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="hex", val_json_bytes="hex")

    device_id: DeviceId
    update_digest: Digest = Field(description="sha256 of the update's canonical bytes")
    signature: bytes = Field(min_length=1, max_length=512, description="the device's signature over update_digest")

    def leaf(self, round_id: int) -> bytes:
        return leaf_hash(round_id, self.device_id, self.update_digest, self.signature)


class InclusionProof(BaseModel):
    """What a device receives after a round: its leaf's inputs, the proof, and the round's model hash."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="hex", val_json_bytes="hex")

    round_id: int = Field(ge=0, lt=_UINT64)
    record: LeafRecord
    proof: list[ProofStep] = Field(max_length=MAX_PROOF_STEPS)
    model_hash: Digest = Field(description="sha256 of the round's global model")

    @field_validator("proof")
    @classmethod
    def _siblings_are_digests(cls, proof: list[ProofStep]) -> list[ProofStep]:
        for step in proof:
            if len(step.sibling) != DIGEST_BYTES:
                raise ValueError(f"a proof sibling is {DIGEST_BYTES} bytes, not {len(step.sibling)}")
        return proof

    @property
    def leaf(self) -> bytes:
        return self.record.leaf(self.round_id)

    def check(self, committed: RoundRecord | None) -> None:
        """Raise :class:`MerkleError` unless ``committed`` (read from the chain) holds this proof's leaf."""
        if committed is None:
            raise MerkleError(f"round {self.round_id} is not committed on chain")
        if committed.round_id != self.round_id:
            raise MerkleError(f"the chain's record is of round {committed.round_id}, not {self.round_id}")
        if not verify_proof(self.leaf, self.proof, committed.root):
            raise MerkleError(f"the proof of {self.record.device_id} does not lead to round {self.round_id}'s root")
        if committed.model_hash != self.model_hash:
            raise MerkleError(f"round {self.round_id}'s model hash on chain differs from the one the hub sent")
