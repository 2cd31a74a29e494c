"""A strategy wrapper that notarizes every round before the inner strategy aggregates it.

For each training reply it recomputes the update's canonical digest (:mod:`protocol.updates`) from the
arrays received, checks that the device claimed the same digest and signed it for this round with the key
the hub holds for it, and makes the round's Merkle leaf (:func:`protocol.merkle.leaf_hash`). A reply that
fails a check is left out of the round (logged with its reason), never aggregated. The digests are taken
before the inner strategy runs, because Flower's robust strategies empty the reply arrays as they go.

After the inner strategy aggregated the accepted replies, the wrapper hashes the new global arrays the same
way and calls :func:`cloud_hub.notary.notarize_round`, which records the round's leaves in the ledger and
commits ``(round id, root, leaf count, model hash)`` to the notary in one transaction. Each device gets its
inclusion proof (and the root it leads to) with the next message it is sent: the round's evaluate message,
or the next round's train message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from cloud_hub.fl.devices import DeviceKeys
from cloud_hub.fl.errors import FederatedError, UpdateRejectedError
from cloud_hub.notary import LeafRecord, Notary, RoundLedger, notarize_round
from protocol.merkle import MerkleTree, ProofStep, leaf_hash
from protocol.updates import RecordNames as R
from protocol.updates import UpdateError, update_digest, verify_update

log = logging.getLogger("edgefleet.fl.notary")


def arrays_digest(arrays: ArrayRecord) -> bytes:
    """The canonical digest of an ArrayRecord (see :mod:`protocol.updates` for the serialization)."""
    return update_digest({name: array.numpy() for name, array in arrays.items()})


@dataclass(frozen=True, slots=True)
class AcceptedUpdate:
    node_id: int
    device_id: str
    digest: bytes
    signature: bytes
    leaf: bytes


@dataclass(slots=True)
class NotarizedRound:
    """What one round left behind: leaves, root, model hash, the notary's receipt, and timings (seconds)."""

    round_id: int
    server_round: int
    accepted: list[AcceptedUpdate]
    rejected: list[UpdateRejectedError]
    root: bytes | None = None
    leaves: list[bytes] = field(default_factory=list)
    model_hash: bytes | None = None
    receipt: Any = None
    verify_seconds: float = 0.0
    aggregate_seconds: float = 0.0
    notarize_seconds: float = 0.0


class NotarizingStrategy(Strategy):
    """Wraps any message-API strategy (FedAvg, FedGeoMedian, FedMedian, FedTrimmedAvg, MultiKrum, …)."""

    def __init__(
        self,
        inner: Strategy,
        *,
        notary: Notary,
        ledger: RoundLedger,
        device_keys: DeviceKeys,
        first_round_id: int = 1,
        on_round: Callable[[NotarizedRound], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner = inner
        self.notary = notary
        self.ledger = ledger
        self.device_keys = device_keys
        self.first_round_id = first_round_id
        self.on_round = on_round
        self.clock = clock
        self.history: list[NotarizedRound] = []
        self._receipts: dict[int, ConfigRecord] = {}

    def round_id(self, server_round: int) -> int:
        """The notary's round id of Flower's ``server_round`` (1-based) in this run."""
        return self.first_round_id + server_round - 1

    def summary(self) -> None:
        log.info("notarizing %s rounds from round id %d", type(self.inner).__name__, self.first_round_id)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[R.ROUND_ID] = self.round_id(server_round)
        messages = [
            self._with_receipt(message) for message in self.inner.configure_train(server_round, arrays, config, grid)
        ]
        # A receipt goes out with the round's evaluate message and the next train message, then no more.
        self._receipts.clear()
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[R.ROUND_ID] = self.round_id(server_round)
        messages = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return [self._with_receipt(message) for message in messages]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_id = self.round_id(server_round)
        started = self.clock()
        notarized = NotarizedRound(round_id=round_id, server_round=server_round, accepted=[], rejected=[])
        passed: list[Message] = []
        seen: set[str] = set()
        for message in replies:
            if message.has_error():
                passed.append(message)  # the inner strategy counts and logs failures
                continue
            try:
                update = self._check(round_id, message, seen)
            except UpdateRejectedError as rejected:
                log.warning("round=%d event=update-rejected %s", round_id, rejected)
                notarized.rejected.append(rejected)
                continue
            seen.add(update.device_id)
            notarized.accepted.append(update)
            passed.append(message)
        notarized.verify_seconds = self.clock() - started
        if not notarized.accepted:
            log.warning("round=%d event=round-skipped reason=no verified update", round_id)
            self.history.append(notarized)
            return None, None

        tree = MerkleTree([update.leaf for update in notarized.accepted])
        started = self.clock()
        arrays, metrics = self.inner.aggregate_train(server_round, passed)
        notarized.aggregate_seconds = self.clock() - started
        if arrays is None:
            self.history.append(notarized)
            return None, metrics

        started = self.clock()
        model_hash = arrays_digest(arrays)
        records = [
            LeafRecord(device_id=u.device_id, update_digest=u.digest, signature=u.signature) for u in notarized.accepted
        ]
        committed = notarize_round(self.notary, self.ledger, round_id, records, model_hash)
        notarized.notarize_seconds = self.clock() - started
        if committed.root != tree.root:
            raise FederatedError(f"round {round_id}: the ledger's root {committed.root.hex()} is not {tree.root.hex()}")
        notarized.receipt = committed.receipt
        notarized.root, notarized.leaves, notarized.model_hash = tree.root, tree.leaves, model_hash
        for update in notarized.accepted:
            proof = committed.proofs[update.device_id]
            self._receipts[update.node_id] = receipt_record(round_id, tree.root, proof.proof, model_hash)
        log.info(
            "round=%d event=round-notarized leaves=%d rejected=%d root=%s model=%s gas=%s",
            round_id,
            len(tree),
            len(notarized.rejected),
            tree.root.hex(),
            model_hash.hex(),
            getattr(notarized.receipt, "gas_used", None),
        )
        self.history.append(notarized)
        if self.on_round is not None:
            self.on_round(notarized)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["notarized-updates"] = len(tree)
        metrics["rejected-updates"] = len(notarized.rejected)
        return arrays, metrics

    def _check(self, round_id: int, message: Message, seen: set[str]) -> AcceptedUpdate:
        node_id = message.metadata.src_node_id
        content = message.content
        claim = content.config_records.get(R.UPDATE)
        if claim is None:
            raise UpdateRejectedError(node_id, None, f"no {R.UPDATE} record (digest and signature)")
        device_id = claim.get(R.DEVICE_ID)
        if not isinstance(device_id, str) or not device_id:
            raise UpdateRejectedError(node_id, None, "no device id")
        if claim.get(R.ROUND_ID) != round_id:
            raise UpdateRejectedError(node_id, device_id, f"signed for round {claim.get(R.ROUND_ID)!r}, not {round_id}")
        arrays = content.array_records.get(R.ARRAYS)
        if arrays is None or len(content.array_records) != 1:
            raise UpdateRejectedError(node_id, device_id, f"exactly one array record named {R.ARRAYS!r} expected")
        try:
            digest = arrays_digest(arrays)
        except UpdateError as exc:
            raise UpdateRejectedError(node_id, device_id, str(exc)) from None
        if claim.get(R.DIGEST) != digest:
            raise UpdateRejectedError(node_id, device_id, "the claimed digest differs from the arrays received")
        signature = claim.get(R.SIGNATURE)
        if not isinstance(signature, bytes):
            raise UpdateRejectedError(node_id, device_id, "no signature")
        key = self.device_keys.public_key(device_id)
        if key is None:
            raise UpdateRejectedError(node_id, device_id, "unknown device (no key registered)")
        try:
            verify_update(key, round_id, device_id, digest, signature)
        except UpdateError as exc:
            raise UpdateRejectedError(node_id, device_id, str(exc)) from None
        if device_id in seen:
            raise UpdateRejectedError(node_id, device_id, "a second update from the same device in one round")
        return AcceptedUpdate(node_id, device_id, digest, signature, leaf_hash(round_id, device_id, digest, signature))

    def _with_receipt(self, message: Message) -> Message:
        receipt = self._receipts.get(message.metadata.dst_node_id)
        if receipt is None:
            return message
        content = RecordDict({name: record for name, record in message.content.items()})
        content[R.RECEIPT] = receipt
        return Message(
            content=content, dst_node_id=message.metadata.dst_node_id, message_type=message.metadata.message_type
        )


def receipt_record(round_id: int, root: bytes, proof: list[ProofStep], model_hash: bytes) -> ConfigRecord:
    """The record that carries a device's inclusion proof to it."""
    return ConfigRecord(
        {
            R.ROUND_ID: round_id,
            R.ROOT: root,
            R.PROOF: json.dumps([step.to_json() for step in proof]),
            R.MODEL_HASH: model_hash,
        }
    )
