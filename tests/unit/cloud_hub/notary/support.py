"""Helpers of the notary tests."""

from __future__ import annotations

import hashlib

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.memory import InMemoryNotary
from protocol.notary import LeafRecord


def stranger_of(notary: Web3Notary | InMemoryNotary) -> Web3Notary | InMemoryNotary:
    """The same notary, sending as an account that is neither the owner nor allowed."""
    if isinstance(notary, InMemoryNotary):
        return notary.as_caller("stranger")
    return notary.with_sender(notary.w3.eth.accounts[1])


def stranger_address(notary: Web3Notary | InMemoryNotary) -> str:
    return "stranger" if isinstance(notary, InMemoryNotary) else str(notary.w3.eth.accounts[1])


def records(n: int, *, salt: str = "") -> list[LeafRecord]:
    """``n`` signed updates from distinct devices."""
    return [
        LeafRecord(
            device_id=f"dev-{i:03d}",
            update_digest=hashlib.sha256(f"update {i}{salt}".encode()).digest(),
            signature=hashlib.sha512(f"signature {i}{salt}".encode()).digest(),
        )
        for i in range(n)
    ]


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()
