"""The hub's on-chain notary: federated rounds and model hashes, committed to an EVM contract.

What needs no chain client is importable from here (the interface, the in-memory fake, the round
ledger, the service functions, the errors); the web3 implementation is in :mod:`cloud_hub.notary.chain`
(the ``chain`` extra). See docs/notary.md.
"""

from cloud_hub.notary.errors import (
    ChainUnavailableError,
    ContractCompileError,
    LedgerError,
    ModelAlreadyAnchoredError,
    NotaryConfigError,
    NotaryError,
    NotaryRefusedError,
    NotaryTimeoutError,
    NotAuthorizedError,
    RoundAlreadyCommittedError,
    RoundConflictError,
    RoundNotRecordedError,
)
from cloud_hub.notary.interface import Notary, Receipt, RoundReceipt
from cloud_hub.notary.ledger import InMemoryRoundLedger, JsonLinesRoundLedger, RoundLedger, StoredRound
from cloud_hub.notary.memory import InMemoryNotary
from cloud_hub.notary.service import NotarizedRound, RoundCheck, check_round, notarize_round
from cloud_hub.notary.settings import ChainSettings
from protocol.notary import InclusionProof, LeafRecord, ModelAnchor, RoundRecord

__all__ = [
    "ChainSettings",
    "ChainUnavailableError",
    "ContractCompileError",
    "InMemoryNotary",
    "InMemoryRoundLedger",
    "InclusionProof",
    "JsonLinesRoundLedger",
    "LeafRecord",
    "LedgerError",
    "ModelAlreadyAnchoredError",
    "ModelAnchor",
    "NotAuthorizedError",
    "NotarizedRound",
    "Notary",
    "NotaryConfigError",
    "NotaryError",
    "NotaryRefusedError",
    "NotaryTimeoutError",
    "Receipt",
    "RoundAlreadyCommittedError",
    "RoundCheck",
    "RoundConflictError",
    "RoundLedger",
    "RoundNotRecordedError",
    "RoundReceipt",
    "RoundRecord",
    "StoredRound",
    "check_round",
    "notarize_round",
]
