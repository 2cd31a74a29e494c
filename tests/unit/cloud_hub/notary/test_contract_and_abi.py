"""The contract compiles from source (cached by source hash), and the device's ABI constants match it."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3 import Web3

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.contract import SOURCE, CompiledContract, compile_notary
from cloud_hub.notary.errors import ContractCompileError
from protocol.merkle import MerkleTree
from protocol.notary import (
    SELECTORS,
    NotaryAbiError,
    check_address,
    decode_bool,
    decode_get_round,
    decode_model_anchor,
    encode_get_round,
    encode_model_anchor,
    encode_verify_inclusion,
    model_id_hash,
)
from tests.unit.cloud_hub.notary.support import digest, records


def test_compiling_is_cached_by_source_hash(tmp_path: Path) -> None:
    first = compile_notary(cache_dir=tmp_path)
    cached = list(tmp_path.glob("Notary-*.json"))
    assert len(cached) == 1
    assert compile_notary(cache_dir=tmp_path) == first  # read back from the cache
    assert first.bytecode.startswith("0x") and len(first.bytecode) > 1000

    edited = tmp_path / "Notary.vy"
    edited.write_text(
        SOURCE.read_text().replace("MAX_PROOF_STEPS: constant(uint256) = 64", "MAX_PROOF_STEPS: constant(uint256) = 32")
    )
    other = compile_notary(source=edited, cache_dir=tmp_path)
    assert other.source_sha256 != first.source_sha256
    assert other.bytecode != first.bytecode
    assert len(list(tmp_path.glob("Notary-*.json"))) == 2


def test_a_broken_source_is_a_compile_error(tmp_path: Path) -> None:
    broken = tmp_path / "Notary.vy"
    broken.write_text(SOURCE.read_text().replace("def commit_round(", "def commit_round(("))
    with pytest.raises(ContractCompileError):
        compile_notary(source=broken, cache_dir=tmp_path)


def test_selectors_match_the_compiled_abi(compiled: CompiledContract) -> None:
    functions = [entry for entry in compiled.abi if entry["type"] == "function"]
    from_abi = {
        f"{entry['name']}({','.join(arg['type'] for arg in entry['inputs'])})": bytes(
            Web3.keccak(text=f"{entry['name']}({','.join(arg['type'] for arg in entry['inputs'])})")[:4]
        )
        for entry in functions
    }
    for signature, selector in SELECTORS.items():
        assert from_abi[signature] == selector, signature


def test_device_calldata_matches_web3s_encoding(chain_notary: Web3Notary) -> None:
    contract = chain_notary.contract
    tree = MerkleTree([record.leaf(3) for record in records(6)])
    leaf = tree.leaves[2]
    proof = tree.proof(leaf)
    sides = sum(1 << i for i, step in enumerate(proof) if step.side == "left")
    expected = {
        encode_get_round(3): contract.encode_abi("get_round", [3]),
        encode_model_anchor("m@1"): contract.encode_abi("model_anchor", [model_id_hash("m@1")]),
        encode_verify_inclusion(3, leaf, proof): contract.encode_abi(
            "verify_inclusion", [3, leaf, [step.sibling for step in proof], sides]
        ),
    }
    for ours, theirs in expected.items():
        assert "0x" + ours.hex() == theirs


def test_device_decoding_of_raw_answers(chain_notary: Web3Notary) -> None:
    tree = MerkleTree([record.leaf(3) for record in records(3)])
    receipt = chain_notary.commit_round(3, tree.root, 3, digest("model"))
    chain_notary.anchor_model("m@1", digest("weights"))
    w3, address = chain_notary.w3, chain_notary.address

    def raw(data: bytes) -> bytes:
        return bytes(w3.eth.call({"to": address, "data": "0x" + data.hex()}))  # type: ignore[typeddict-item]

    record = decode_get_round(3, raw(encode_get_round(3)))
    assert record is not None
    assert (record.root, record.leaf_count, record.model_hash, record.block_number) == (
        tree.root,
        3,
        digest("model"),
        receipt.block_number,
    )
    assert record == chain_notary.get_round(3)
    assert decode_get_round(4, raw(encode_get_round(4))) is None
    anchor = decode_model_anchor("m@1", raw(encode_model_anchor("m@1")))
    assert anchor is not None and anchor.digest == digest("weights")
    assert decode_model_anchor("m@2", raw(encode_model_anchor("m@2"))) is None
    leaf = tree.leaves[1]
    assert decode_bool(raw(encode_verify_inclusion(3, leaf, tree.proof(leaf))))
    assert not decode_bool(raw(encode_verify_inclusion(3, digest("not a leaf"), tree.proof(leaf))))


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_get_round(-1),
        lambda: encode_get_round(2**64),
        lambda: encode_model_anchor(""),
        lambda: encode_verify_inclusion(1, b"short", []),
        lambda: decode_get_round(1, b"\x00" * 64),
        lambda: decode_bool((2).to_bytes(32, "big")),
        lambda: decode_get_round(1, b"\x01" * 32 + (2**64).to_bytes(32, "big") + b"\x00" * 96),
        lambda: check_address("0x1234"),
    ],
)
def test_malformed_abi_input_is_refused(call: object) -> None:
    with pytest.raises(NotaryAbiError):
        call()  # type: ignore[operator]
