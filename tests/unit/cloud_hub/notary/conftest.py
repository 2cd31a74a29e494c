"""Notaries to test against: a fresh in-process EVM with the contract deployed, and the in-memory fake."""

from __future__ import annotations

import pytest

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.contract import CompiledContract, compile_notary
from cloud_hub.notary.memory import InMemoryNotary


@pytest.fixture(scope="session")
def compiled() -> CompiledContract:
    return compile_notary()  # the default cache, shared by test runs (keyed by the source hash)


@pytest.fixture
def chain_notary(compiled: CompiledContract) -> Web3Notary:
    """The contract on a fresh in-process EVM, owned by the chain's first account."""
    from web3 import EthereumTesterProvider, Web3

    w3 = Web3(EthereumTesterProvider())
    return Web3Notary.deploy(w3, sender=w3.eth.accounts[0], compiled=compiled)


@pytest.fixture(params=["evm", "memory"])
def notary(request: pytest.FixtureRequest, compiled: CompiledContract) -> Web3Notary | InMemoryNotary:
    """Each behavioural test runs on the contract and on the fake, which must agree."""
    if request.param == "memory":
        return InMemoryNotary()
    notary: Web3Notary = request.getfixturevalue("chain_notary")
    return notary
