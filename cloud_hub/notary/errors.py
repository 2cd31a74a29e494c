"""The notary's exception tree, documented in one place.

::

    NotaryError                     anything the notary raises on purpose (a HubError)
    ├── NotaryConfigError           settings that cannot work: no contract address, two keys, a bad key file
    ├── ContractCompileError        Vyper refused the contract source, or is not installed
    ├── ChainUnavailableError       the JSON-RPC node cannot be reached, or no notary contract at the address
    ├── NotaryTimeoutError          a transaction was not mined (or confirmed) in time
    ├── NotaryRefusedError          the contract reverted a transaction
    │   ├── NotAuthorizedError      the sender is neither the owner nor an allowed notary account
    │   ├── RoundAlreadyCommittedError   a round id is committed once
    │   └── ModelAlreadyAnchoredError    a model id is anchored once
    └── LedgerError                 the store of round leaves failed or holds something unreadable
        ├── RoundNotRecordedError   no leaves are stored for a round
        └── RoundConflictError      a round is already recorded with other leaves or another model hash

web3, eth-tester and OS errors are translated at the boundary with ``raise ... from``; input that
does not fit the contract (a root that is not 32 bytes, a round id past 2**64) raises
:class:`protocol.notary.NotaryAbiError` (a ValueError) before anything is sent.
"""

from __future__ import annotations

from cloud_hub.errors import HubError


class NotaryError(HubError):
    """Base class of every error the notary raises on purpose."""


class NotaryConfigError(NotaryError):
    """The chain settings cannot work as given."""


class ContractCompileError(NotaryError):
    """The notary contract could not be compiled from source."""


class ChainUnavailableError(NotaryError):
    """The chain's JSON-RPC endpoint did not answer, or the address holds no notary contract."""


class NotaryTimeoutError(NotaryError):
    """A transaction was not mined, or not confirmed by enough blocks, within the timeout."""


class NotaryRefusedError(NotaryError):
    """The contract reverted a transaction; ``reason`` is its revert message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAuthorizedError(NotaryRefusedError):
    """The sending account is neither the contract's owner nor an allowed notary account."""


class RoundAlreadyCommittedError(NotaryRefusedError):
    """The round id is already committed; a round is committed once."""


class ModelAlreadyAnchoredError(NotaryRefusedError):
    """The model id is already anchored; a model id is anchored once."""


class LedgerError(NotaryError):
    """The round ledger failed, or holds a record it cannot read."""


class RoundNotRecordedError(LedgerError):
    """No leaves are stored for the round."""


class RoundConflictError(LedgerError):
    """The round is already recorded with other leaves or another model hash."""
