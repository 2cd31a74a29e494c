"""The notary on an Ethereum chain through web3: an in-process EVM by default, or any JSON-RPC node.

::

    notary = open_notary(ChainSettings())                       # in-process EVM, contract deployed
    notary = open_notary(ChainSettings(url="http://127.0.0.1:8545", contract_address="0x…",
                                       private_key_file=Path("hub.key")))
    receipt = notary.commit_round(7, tree.root, len(tree), model_sha256)

Every transaction is first estimated against the node, so a refusal (a round committed before, a
caller not allowed) comes back as its revert reason without spending gas, then signed (locally with a
private key, or by the node for an unlocked account), sent, and waited for. web3's and eth-tester's
exceptions are translated into :mod:`cloud_hub.notary.errors` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed  # the in-process EVM's own error for a revert
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import (
    BadFunctionCallOutput,
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
)
from web3.types import TxReceipt, Wei

from cloud_hub.notary.contract import CompiledContract, compile_notary
from cloud_hub.notary.errors import (
    ChainUnavailableError,
    ModelAlreadyAnchoredError,
    NotaryConfigError,
    NotaryError,
    NotaryRefusedError,
    NotaryTimeoutError,
    NotAuthorizedError,
    RoundAlreadyCommittedError,
)
from cloud_hub.notary.interface import Receipt, check_commit, check_digest, check_proof, check_round_id
from cloud_hub.notary.settings import ChainSettings
from protocol.merkle import ProofStep
from protocol.notary import RoundRecord, model_id_hash, proof_sides

Sender = LocalAccount | str
"""A local account signs its own transactions; a plain address is an account the node holds unlocked."""

GAS_MARGIN = 1.2  # the estimate is exact for this contract; the margin covers a node that estimates low

_REFUSALS: dict[str, type[NotaryRefusedError]] = {
    "notary: round already committed": RoundAlreadyCommittedError,
    "notary: model already anchored": ModelAlreadyAnchoredError,
    "notary: caller is not a notary": NotAuthorizedError,
    "notary: caller is not the owner": NotAuthorizedError,
}


def _refusal(message: str) -> NotaryRefusedError:
    for reason, error in _REFUSALS.items():
        if reason in message:
            return error(reason)
    return NotaryRefusedError(message)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Foreign exceptions become notary errors here."""
    try:
        yield
    except NotaryError:
        raise
    except (ContractLogicError, TransactionFailed) as exc:
        raise _refusal(str(exc)) from exc
    except TimeExhausted as exc:
        raise NotaryTimeoutError(f"{action}: {exc}") from exc
    except OSError as exc:  # requests' connection errors and timeouts are OSErrors
        raise ChainUnavailableError(f"{action}: the chain's node did not answer: {exc}") from exc
    except Web3Exception as exc:
        text = str(exc)
        if "revert" in text:
            raise _refusal(text) from exc
        raise NotaryError(f"{action}: {text}") from exc


def _load_key(settings: ChainSettings) -> LocalAccount | None:
    if settings.private_key is not None:
        secret = settings.private_key.get_secret_value().strip()
        source = "private_key"
    elif settings.private_key_file is not None:
        try:
            secret = settings.private_key_file.read_text().strip()
        except OSError as exc:
            raise NotaryConfigError(f"cannot read the private key file {settings.private_key_file}: {exc}") from exc
        source = str(settings.private_key_file)
    else:
        return None
    try:
        account: LocalAccount = Account.from_key(secret)
    except (ValueError, TypeError) as exc:
        # The key itself must not appear in the message.
        raise NotaryConfigError(f"{source} does not hold a valid hex private key") from exc
    return account


class Web3Notary:
    """The notary contract on a chain reached through web3 (see the module's docstring)."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        *,
        sender: Sender | None,
        compiled: CompiledContract,
        confirmations: int = 0,
        timeout_s: float = 120.0,
        poll_interval_s: float = 0.2,
        lock: threading.RLock | None = None,
    ) -> None:
        self.w3 = w3
        self.compiled = compiled
        self.contract: Contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=compiled.abi)
        self.sender = sender
        self.confirmations = confirmations
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        # eth-tester is not thread-safe, and one sender's nonces must be handed out one at a time.
        self.lock = lock if lock is not None else threading.RLock()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def deploy(cls, w3: Web3, *, sender: Sender, compiled: CompiledContract, **options: Any) -> Web3Notary:
        """Deploy a new notary contract owned by ``sender``."""
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        lock = options.pop("lock", None) or threading.RLock()
        timeout_s = float(options.get("timeout_s", 120.0))
        poll = float(options.get("poll_interval_s", 0.2))
        with lock, _translated("deploying the notary"):
            tx_hash = _send(w3, factory.constructor(), sender)
        receipt = _wait_for_receipt(w3, lock, tx_hash, timeout_s, poll)
        if receipt["status"] != 1 or not receipt["contractAddress"]:
            raise NotaryError(f"deploying the notary failed in transaction {tx_hash.hex()}")
        address = str(receipt["contractAddress"])
        notary = cls(w3, address, sender=sender, compiled=compiled, lock=lock, **options)
        notary._wait_confirmed(tx_hash, int(receipt["blockNumber"]))
        return notary

    @classmethod
    def attach(
        cls, w3: Web3, address: str, *, sender: Sender | None, compiled: CompiledContract, **options: Any
    ) -> Web3Notary:
        """The notary already deployed at ``address``; refuses an address without code."""
        with _translated(f"reading the code at {address}"):
            code = w3.eth.get_code(Web3.to_checksum_address(address))
        if not code:
            raise ChainUnavailableError(f"no contract at {address} on this chain (deploy one: edgefleet chain deploy)")
        notary = cls(w3, address, sender=sender, compiled=compiled, **options)
        with _translated(f"reading the notary at {address}"):
            try:
                notary.contract.functions.round_count().call()
            except (ContractLogicError, TransactionFailed, BadFunctionCallOutput) as exc:
                raise ChainUnavailableError(f"the contract at {address} is not a notary") from exc
        return notary

    @classmethod
    def in_process(cls, *, compile_cache: Path | None = None) -> Web3Notary:
        """A fresh in-process EVM with the notary deployed by its first (funded, unlocked) account."""
        w3 = Web3(EthereumTesterProvider())
        return cls.deploy(w3, sender=w3.eth.accounts[0], compiled=compile_notary(cache_dir=compile_cache))

    def with_sender(self, sender: Sender) -> Web3Notary:
        """The same contract, with transactions sent by ``sender``."""
        return Web3Notary(
            self.w3,
            self.address,
            sender=sender,
            compiled=self.compiled,
            confirmations=self.confirmations,
            timeout_s=self.timeout_s,
            poll_interval_s=self.poll_interval_s,
            lock=self.lock,
        )

    # -- reads ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return str(self.contract.address)

    @property
    def sender_address(self) -> str:
        if self.sender is None:
            raise NotaryConfigError("this notary reads only: no account to send transactions from")
        return self.sender if isinstance(self.sender, str) else str(self.sender.address)

    def _call(self, function: ContractFunction, action: str) -> Any:
        with self.lock, _translated(action):
            return function.call()

    @property
    def owner(self) -> str:
        return str(self._call(self.contract.functions.owner(), "reading the owner"))

    def round_count(self) -> int:
        return int(self._call(self.contract.functions.round_count(), "reading the round count"))

    def is_notary(self, account: str) -> bool:
        checksummed = Web3.to_checksum_address(account)
        return bool(self._call(self.contract.functions.is_notary(checksummed), "reading the allow-list"))

    def get_round(self, round_id: int) -> RoundRecord | None:
        check_round_id(round_id)
        root, leaf_count, model_hash, block, timestamp = self._call(
            self.contract.functions.get_round(round_id), f"reading round {round_id}"
        )
        if root == bytes(32):
            return None
        return RoundRecord(
            round_id=round_id,
            root=bytes(root),
            leaf_count=int(leaf_count),
            model_hash=bytes(model_hash),
            block_number=int(block),
            timestamp=int(timestamp),
        )

    def model_anchor(self, model_id: str) -> bytes | None:
        digest, _block, _timestamp = self._call(
            self.contract.functions.model_anchor(model_id_hash(model_id)), f"reading the anchor of {model_id}"
        )
        return None if digest == bytes(32) else bytes(digest)

    def verify_inclusion(self, round_id: int, leaf: bytes, proof: list[ProofStep]) -> bool:
        check_proof(round_id, leaf, proof)
        function = self.contract.functions.verify_inclusion(
            round_id, leaf, [step.sibling for step in proof], proof_sides(proof)
        )
        return bool(self._call(function, f"verifying a proof of round {round_id}"))

    # -- transactions ---------------------------------------------------------------------------

    def commit_round(self, round_id: int, root: bytes, leaf_count: int, model_hash: bytes) -> Receipt:
        check_commit(round_id, root, leaf_count, model_hash)
        function = self.contract.functions.commit_round(round_id, root, leaf_count, model_hash)
        return self._transact(function, f"committing round {round_id}")

    def anchor_model(self, model_id: str, sha256: bytes) -> Receipt:
        check_digest(sha256, "a model hash")
        function = self.contract.functions.anchor_model(model_id_hash(model_id), sha256)
        return self._transact(function, f"anchoring model {model_id}")

    def allow_notary(self, account: str, allowed: bool = True) -> Receipt:
        """Let another hub account commit rounds and anchor models (owner only)."""
        function = self.contract.functions.set_notary(Web3.to_checksum_address(account), allowed)
        return self._transact(function, f"setting notary {account}")

    def _transact(self, function: ContractFunction, action: str) -> Receipt:
        if self.sender is None:
            raise NotaryConfigError(f"{action}: this notary reads only (no private key or account)")
        # The lock covers each exchange with the node, never a wait: reads go on while a commit confirms.
        with self.lock, _translated(action):
            tx_hash = _send(self.w3, function, self.sender)
        receipt = _wait_for_receipt(self.w3, self.lock, tx_hash, self.timeout_s, self.poll_interval_s)
        if receipt["status"] != 1:
            # Mined but reverted (another sender got in first): the call says why.
            with self.lock, _translated(action):
                function.call({"from": self.sender_address})
            raise NotaryRefusedError(f"{action}: transaction {tx_hash.hex()} reverted")
        block_number = int(receipt["blockNumber"])
        self._wait_confirmed(tx_hash, block_number)
        return Receipt(tx_hash=bytes(tx_hash), block_number=block_number, gas_used=int(receipt["gasUsed"]))

    def _wait_confirmed(self, tx_hash: HexBytes, block_number: int) -> None:
        if self.confirmations == 0:
            return
        deadline = time.monotonic() + self.timeout_s
        action = f"waiting for {self.confirmations} confirmations of {tx_hash.hex()}"
        while True:
            with self.lock, _translated(action):
                latest = self.w3.eth.block_number
                receipt = None
                if latest >= block_number + self.confirmations:
                    receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # raises if a reorg dropped it
            if receipt is not None:
                if int(receipt["blockNumber"]) + self.confirmations <= latest and receipt["status"] == 1:
                    return
                block_number = int(receipt["blockNumber"])
            if time.monotonic() > deadline:
                raise NotaryTimeoutError(
                    f"transaction {tx_hash.hex()} has {max(0, latest - block_number)} of "
                    f"{self.confirmations} confirmations after {self.timeout_s:g} s"
                )
            time.sleep(self.poll_interval_s)


def _wait_for_receipt(
    w3: Web3, lock: threading.RLock, tx_hash: HexBytes, timeout_s: float, poll_interval_s: float
) -> TxReceipt:
    deadline = time.monotonic() + timeout_s
    while True:
        # Not mined yet: look again after the poll interval.
        with lock, _translated(f"waiting for transaction {tx_hash.hex()}"), contextlib.suppress(TransactionNotFound):
            return w3.eth.get_transaction_receipt(tx_hash)
        if time.monotonic() > deadline:
            raise NotaryTimeoutError(f"transaction {tx_hash.hex()} was not mined within {timeout_s:g} s")
        time.sleep(poll_interval_s)


def _send(w3: Web3, function: Any, sender: Sender) -> HexBytes:
    """Estimate (a refusal surfaces here, with its reason), then sign and send; returns the hash."""
    address = sender if isinstance(sender, str) else sender.address
    gas = int(function.estimate_gas({"from": address}) * GAS_MARGIN)
    if isinstance(sender, str):
        return HexBytes(function.transact({"from": address, "gas": gas}))
    transaction = function.build_transaction(
        {
            "from": address,
            "gas": gas,
            "nonce": w3.eth.get_transaction_count(Web3.to_checksum_address(address), "pending"),
        }
    )
    signed = sender.sign_transaction(transaction)
    return HexBytes(w3.eth.send_raw_transaction(signed.raw_transaction))


def _fund(w3: Web3, address: str) -> None:
    """Give a private key's account ether on the in-process chain, from one of its funded accounts."""
    with _translated("funding the notary account"):
        tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": address, "value": Wei(10**20)})
        w3.eth.wait_for_transaction_receipt(tx_hash)


def connect(settings: ChainSettings) -> Web3:
    """A web3 client for the settings' chain: an in-process EVM when ``url`` is None."""
    if settings.url is None:
        return Web3(EthereumTesterProvider())
    return Web3(HTTPProvider(settings.url, request_kwargs={"timeout": min(settings.timeout_s, 30.0)}))


def resolve_sender(w3: Web3, settings: ChainSettings) -> Sender:
    """The account that signs: the private key, else the configured unlocked account, else the node's first."""
    key = _load_key(settings)
    if key is not None:
        return key
    if settings.account is not None:
        return Web3.to_checksum_address(settings.account)
    with _translated("listing the node's accounts"):
        accounts = w3.eth.accounts
    if not accounts:
        raise NotaryConfigError("the node holds no unlocked account: set private_key or private_key_file")
    return str(accounts[0])


def open_notary(
    settings: ChainSettings, *, deploy: bool = False, read_only: bool = False, w3: Web3 | None = None
) -> Web3Notary:
    """The notary the settings point at.

    In process (``url`` None) a contract is always deployed. On a node, ``contract_address`` is
    attached to; without one, ``deploy=True`` deploys a new contract and anything else is refused.
    A ``read_only`` notary needs no account and refuses to send transactions.
    """
    if settings.url is None and settings.contract_address is not None:
        raise NotaryConfigError("contract_address needs a url: the in-process chain starts empty")
    if settings.url is not None and settings.contract_address is not None and deploy:
        raise NotaryConfigError(f"contract_address is set ({settings.contract_address}); not deploying another")
    if settings.url is not None and settings.contract_address is None and not deploy:
        raise NotaryConfigError("no contract_address in the [chain] settings: deploy one with 'edgefleet chain deploy'")
    w3 = w3 if w3 is not None else connect(settings)
    compiled = compile_notary(cache_dir=settings.compile_cache)
    options: dict[str, Any] = {
        "confirmations": settings.confirmations if settings.url is not None else 0,
        "timeout_s": settings.timeout_s,
        "poll_interval_s": settings.poll_interval_s,
    }
    if settings.contract_address is not None:
        sender = None if read_only else resolve_sender(w3, settings)
        return Web3Notary.attach(w3, settings.contract_address, sender=sender, compiled=compiled, **options)
    sender = resolve_sender(w3, settings)
    if settings.url is None and not isinstance(sender, str):
        _fund(w3, sender.address)
    return Web3Notary.deploy(w3, sender=sender, compiled=compiled, **options)
