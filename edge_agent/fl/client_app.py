"""The Flower ClientApp a SuperNode runs beside the edge agent (needs the ``edge-fl`` extra).

The SuperNode's ``--node-config`` binds the app to this device::

    flower-supernode --superlink HUB:9092 --node-config \
        'device-id="dev-1" device-key="/etc/edgefleet/device.key" dataset="/var/lib/edgefleet/fl.db" \
         backbone="/opt/edgefleet/models/federated_plaid_backbone_int8.onnx"'

``device-key`` is the device's Ed25519 private key (PEM), which signs every update it sends; ``dataset`` the
SQLite file of labelled windows the agent appends to (:mod:`edge_agent.fl.dataset`); ``backbone`` the frozen
int8 embedding model. ``backbone-sha256`` optionally pins the backbone file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge_agent.fl.client import FederatedClient
from edge_agent.fl.dataset import LocalDataset
from edge_agent.fl.embedding import OnnxEmbedder
from edge_agent.fl.errors import FederatedError, ProofError, TrainingError
from edge_agent.fl.head import BIAS, WEIGHT, TrainingSettings
from protocol.merkle import MerkleError, ProofStep
from protocol.updates import RecordNames as R

log = logging.getLogger("edgefleet.fl.client")

app = ClientApp()


def load_device_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise FederatedError(f"cannot read the device key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise FederatedError(f"the device key {path} must be an Ed25519 key")
    return key


def _setting(node_config: dict[str, object], name: str) -> str:
    value = node_config.get(name)
    if not isinstance(value, str) or not value:
        raise FederatedError(f'the SuperNode\'s --node-config needs {name}="..."')
    return value


@contextmanager
def open_client(node_config: dict[str, object]) -> Iterator[FederatedClient]:
    """The device's client, from the SuperNode's node config; closes the dataset afterwards."""
    sha256 = node_config.get("backbone-sha256")
    embedder = OnnxEmbedder(Path(_setting(node_config, "backbone")), sha256=sha256 if isinstance(sha256, str) else None)
    key = load_device_key(Path(_setting(node_config, "device-key")))
    with LocalDataset(Path(_setting(node_config, "dataset"))) as dataset:
        yield FederatedClient(device_id=_setting(node_config, "device-id"), key=key, dataset=dataset, embedder=embedder)


def training_settings(config: ConfigRecord, default: TrainingSettings) -> TrainingSettings:
    """Training settings the hub sent with the round, over the device's defaults."""

    def number(name: str, fallback: float) -> float:
        value = config.get(name, fallback)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrainingError(f"config {name} must be a number, not {value!r}")
        return float(value)

    return TrainingSettings(
        epochs=int(number("epochs", default.epochs)),
        batch_size=int(number("batch-size", default.batch_size)),
        learning_rate=number("learning-rate", default.learning_rate),
        l2=number("l2", default.l2),
        seed=int(number("server-round", default.seed)),
    )


def _round_id(config: ConfigRecord) -> int:
    value = config.get(R.ROUND_ID, config.get("server-round"))
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrainingError(f"the round's config carries no integer {R.ROUND_ID}")
    return value


def _head(msg: Message) -> tuple[object, object]:
    arrays = msg.content.array_records.get(R.ARRAYS)
    if arrays is None or WEIGHT not in arrays or BIAS not in arrays:
        raise TrainingError(f"the message carries no {R.ARRAYS} record with {WEIGHT} and {BIAS}")
    return arrays[WEIGHT].numpy(), arrays[BIAS].numpy()


def accept_receipt(client: FederatedClient, content: RecordDict) -> None:
    """Check and keep the inclusion proof of a past round when the hub sent one (logged, never fatal)."""
    receipt = content.config_records.get(R.RECEIPT)
    if receipt is None:
        return
    try:
        round_id = receipt[R.ROUND_ID]
        if isinstance(round_id, bool) or not isinstance(round_id, int):
            raise ProofError("the receipt's round id is not an integer")
        root = receipt[R.ROOT]
        if not isinstance(root, bytes):
            raise ProofError("the receipt's root is not bytes")
        proof = [ProofStep.from_json(step) for step in json.loads(str(receipt[R.PROOF]))]
        model_hash = receipt.get(R.MODEL_HASH)
        client.accept_proof(round_id, root, proof, model_hash if isinstance(model_hash, bytes) else None)
        log.info("device=%s round=%d event=proof-verified root=%s", client.device_id, round_id, root.hex())
    except (KeyError, ValueError, MerkleError, ProofError) as exc:
        log.warning("device=%s event=proof-rejected reason=%s", client.device_id, exc)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the global head on this device's data; reply with the signed update."""
    config = msg.content.config_records.get(R.CONFIG, ConfigRecord())
    weight, bias = _head(msg)
    with open_client(dict(context.node_config)) as client:
        accept_receipt(client, msg.content)
        round_id = _round_id(config)
        update = client.train(round_id, weight, bias, training_settings(config, client.settings))  # type: ignore[arg-type]
        log.info(
            "device=%s round=%d event=trained examples=%d loss=%.4f digest=%s",
            client.device_id,
            round_id,
            update.training.examples,
            update.training.loss,
            update.digest.hex(),
        )
        content = RecordDict(
            {
                R.ARRAYS: ArrayRecord({name: Array(value) for name, value in update.arrays.items()}),
                R.METRICS: MetricRecord(
                    {
                        R.NUM_EXAMPLES: update.training.examples,
                        "train-loss-before": update.training.loss_before,
                        "train-loss": update.training.loss,
                        "train-accuracy": update.training.accuracy,
                    }
                ),
                R.UPDATE: ConfigRecord(
                    {
                        R.DEVICE_ID: client.device_id,
                        R.ROUND_ID: round_id,
                        R.DIGEST: update.digest,
                        R.SIGNATURE: update.signature,
                    }
                ),
            }
        )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the global head on this device's data (and keep the receipt of the round just notarized)."""
    weight, bias = _head(msg)
    with open_client(dict(context.node_config)) as client:
        accept_receipt(client, msg.content)
        result = client.evaluate(weight, bias)  # type: ignore[arg-type]
        metrics = MetricRecord(
            {R.NUM_EXAMPLES: result.examples, "eval-loss": result.loss, "eval-accuracy": result.accuracy}
        )
    return Message(content=RecordDict({R.METRICS: metrics}), reply_to=msg)
