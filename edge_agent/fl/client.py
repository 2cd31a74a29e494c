"""The federated client's logic, without Flower: train the head on local data, sign the update, check proofs.

:mod:`edge_agent.fl.client_app` is the thin Flower shell over it; tests and benchmarks drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.fl.dataset import LocalDataset
from edge_agent.fl.embedding import Embedder, FloatArray
from edge_agent.fl.errors import ProofError, TrainingError
from edge_agent.fl.head import (
    BIAS,
    DEFAULT_TRAINING,
    WEIGHT,
    HeadUpdate,
    TrainingSettings,
    accuracy,
    check_head,
    cross_entropy,
    train_head,
)
from protocol.merkle import ProofStep, leaf_hash, root_from_proof
from protocol.notary import InclusionProof, LeafRecord
from protocol.updates import sign_update, update_digest


@dataclass(frozen=True, slots=True)
class SignedUpdate:
    """A trained head, its canonical digest and the device's signature over it for one round."""

    round_id: int
    device_id: str
    arrays: dict[str, FloatArray]
    digest: bytes
    signature: bytes
    training: HeadUpdate

    @property
    def leaf(self) -> bytes:
        return leaf_hash(self.round_id, self.device_id, self.digest, self.signature)


@dataclass(frozen=True, slots=True)
class Evaluation:
    loss: float
    accuracy: float
    examples: int


class FederatedClient:
    """One device's part in federated rounds."""

    def __init__(
        self,
        *,
        device_id: str,
        key: Ed25519PrivateKey,
        dataset: LocalDataset,
        embedder: Embedder,
        settings: TrainingSettings = DEFAULT_TRAINING,
    ) -> None:
        if not device_id:
            raise TrainingError("a federated client needs a device id")
        self.device_id = device_id
        self._key = key
        self._dataset = dataset
        self._embedder = embedder
        self.settings = settings

    def local_data(self) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """The embeddings of every stored labelled window, and the labels."""
        windows, labels = self._dataset.load()
        return self._embedder.embed(windows), labels

    def train(
        self, round_id: int, weight: npt.ArrayLike, bias: npt.ArrayLike, settings: TrainingSettings | None = None
    ) -> SignedUpdate:
        """Train the global head on the local data and sign the result for ``round_id``."""
        features, labels = self.local_data()
        settings = settings or self.settings
        if self._embedder.standardized:  # standardized for the fleet: no device rescales it its own way
            settings = replace(settings, standardize=False)
        update = train_head(weight, bias, features, labels, settings)
        arrays = {WEIGHT: update.weight, BIAS: update.bias}
        digest = update_digest(arrays)
        signature = sign_update(self._key, round_id, self.device_id, digest)
        self._dataset.record_update(round_id, digest, signature, update.examples)
        return SignedUpdate(round_id, self.device_id, arrays, digest, signature, update)

    def evaluate(self, weight: npt.ArrayLike, bias: npt.ArrayLike) -> Evaluation:
        """The global head's loss and accuracy on the local data."""
        features, labels = self.local_data()
        w, b = check_head(weight, bias, self._embedder.features)
        if len(labels) == 0:
            return Evaluation(loss=0.0, accuracy=0.0, examples=0)
        return Evaluation(cross_entropy(w, b, features, labels), accuracy(w, b, features, labels), len(labels))

    def accept_proof(self, round_id: int, root: bytes, proof: list[ProofStep], model_hash: bytes | None = None) -> None:
        """Check that this device's update of ``round_id`` is under ``root``; keep the proof for later audits.

        Raises :class:`ProofError` when the device sent no update that round or the proof does not lead to
        ``root``; the failure is stored too, so that an audit sees it.
        """
        record = self._dataset.round(round_id)
        if record is None:
            raise ProofError(f"device {self.device_id} sent no update in round {round_id}")
        leaf = leaf_hash(round_id, self.device_id, record.digest, record.signature)
        verified = root_from_proof(leaf, proof) == root
        self._dataset.record_proof(round_id, root, proof, model_hash=model_hash, verified=verified)
        if not verified:
            raise ProofError(
                f"the proof for round {round_id} does not lead from device {self.device_id}'s leaf to root {root.hex()}"
            )

    def inclusion_proof(self, round_id: int) -> InclusionProof:
        """This device's proof for ``round_id``, as :class:`edge_agent.chain.ChainReader` checks it on chain."""
        record = self._dataset.round(round_id)
        if record is None or record.proof is None or record.model_hash is None:
            raise ProofError(f"device {self.device_id} holds no proof for round {round_id}")
        return InclusionProof(
            round_id=round_id,
            record=LeafRecord(device_id=self.device_id, update_digest=record.digest, signature=record.signature),
            proof=record.proof,
            model_hash=record.model_hash,
        )
