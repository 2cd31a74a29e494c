from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.fl.client import FederatedClient
from edge_agent.fl.dataset import LocalDataset
from edge_agent.fl.embedding import FixedEmbedder, OnnxEmbedder
from edge_agent.fl.errors import DatasetError, ProofError, TrainingError
from edge_agent.fl.head import TrainingSettings, accuracy, train_head
from protocol.merkle import MerkleTree, leaf_hash
from protocol.updates import update_digest, verify_update
from tests.unit.fl.conftest import BACKBONE_INT8, CLASSES, DESCRIPTION, INITIAL_HEAD, synthetic_windows


def test_the_dataset_keeps_each_verdict_once_and_refuses_bad_samples(tmp_path: Path) -> None:
    with LocalDataset(tmp_path / "fl.db") as dataset:
        assert dataset.add(np.ones(8), 2, source="verdict", message_id="m1")
        assert not dataset.add(np.ones(8), 2, source="verdict", message_id="m1")
        assert dataset.add(np.zeros(8), 0, source="confirmed")
        with pytest.raises(DatasetError, match="NaN"):
            dataset.add(np.array([1.0, np.nan]), 1, source="verdict")
        with pytest.raises(DatasetError, match="1-D"):
            dataset.add(np.ones((2, 2)), 1, source="verdict")
        with pytest.raises(DatasetError, match="label"):
            dataset.add(np.ones(8), -1, source="verdict")
        assert len(dataset) == 2
    with LocalDataset(tmp_path / "fl.db") as reopened:
        windows, labels = reopened.load()
    assert windows.shape == (2, 8) and labels.tolist() == [2, 0]


def test_softmax_regression_learns_separable_embeddings() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    centres = rng.normal(scale=3.0, size=(4, 8)).astype(np.float32)
    features = (centres[labels] + rng.normal(size=(400, 8))).astype(np.float32)
    start_w, start_b = np.zeros((4, 8), np.float32), np.zeros(4, np.float32)
    update = train_head(start_w, start_b, features, labels, TrainingSettings(epochs=10, learning_rate=0.1))
    assert update.loss < update.loss_before / 5
    assert accuracy(update.weight, update.bias, features, labels) > 0.95
    assert np.all(start_w == 0)  # the global head is not changed in place


def test_training_is_invariant_to_the_features_offset_and_scale() -> None:
    """Standardized steps: proportions in [0, 1] far from centred learn as fast as centred features."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=400)
    centred = (rng.normal(scale=0.5, size=(4, 300))[labels] + rng.normal(size=(400, 300))).astype(np.float32)
    proportions = (0.5 + 0.05 * centred).astype(np.float32)  # hundreds of features near 0.5, small spread
    start_w, start_b = np.zeros((4, 300), np.float32), np.zeros(4, np.float32)
    settings = TrainingSettings(epochs=1, learning_rate=0.05)
    on_centred = train_head(start_w, start_b, centred, labels, settings)
    on_proportions = train_head(start_w, start_b, proportions, labels, settings)
    assert on_proportions.accuracy > 0.9 and on_proportions.accuracy == pytest.approx(on_centred.accuracy, abs=0.01)
    # the head comes back in the features' own coordinates
    assert accuracy(on_proportions.weight, on_proportions.bias, proportions, labels) == on_proportions.accuracy


def test_a_feature_flat_on_the_device_takes_no_outsized_step() -> None:
    rng = np.random.default_rng(2)
    labels = np.arange(64, dtype=np.int64) % 2
    features = rng.normal(size=(64, 8)).astype(np.float32)
    features[:, 0] = 0.25  # flat on this device: it may vary elsewhere
    features[0, 0] = 0.2501
    update = train_head(np.zeros((2, 8)), np.zeros(2), features, labels, TrainingSettings(epochs=20))
    assert np.all(np.isfinite(update.weight)) and np.abs(update.weight[:, 0]).max() < np.abs(update.weight).max()


def test_without_local_standardization_the_steps_are_plain_sgd_on_the_features() -> None:
    """On features the fleet's backbone standardized already: one minibatch, the textbook step."""
    rng = np.random.default_rng(3)
    labels = np.arange(8, dtype=np.int64) % 2
    features = rng.normal(loc=5.0, scale=2.0, size=(8, 3)).astype(np.float32)
    weight, bias = rng.normal(size=(2, 3)).astype(np.float32), np.zeros(2, np.float32)
    settings = TrainingSettings(epochs=1, batch_size=8, learning_rate=0.1, l2=0.0, standardize=False)
    update = train_head(weight, bias, features, labels, settings)
    scores = features @ weight.T + bias
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    error = (p / p.sum(axis=1, keepdims=True) - np.eye(2)[labels]) / 8
    np.testing.assert_allclose(update.weight, weight - 0.1 * error.T @ features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(update.bias, bias - 0.1 * error.sum(axis=0), rtol=1e-5, atol=1e-6)
    standardized = train_head(weight, bias, features, labels, TrainingSettings(epochs=1, batch_size=8, l2=0.0))
    assert not np.allclose(standardized.weight, update.weight)  # the default standardizes locally


def test_training_refuses_a_head_that_does_not_fit() -> None:
    features = np.ones((4, 8), np.float32)
    with pytest.raises(TrainingError, match="features"):
        train_head(np.zeros((3, 5)), np.zeros(3), features, np.zeros(4, np.int64))
    with pytest.raises(TrainingError, match="no local labelled data"):
        train_head(np.zeros((3, 8)), np.zeros(3), features[:0], np.zeros(0, np.int64))
    with pytest.raises(TrainingError, match="classes"):
        train_head(np.zeros((3, 8)), np.zeros(3), features, np.full(4, 5, np.int64))


def test_the_int8_backbone_embeds_windows() -> None:
    embedder = OnnxEmbedder(BACKBONE_INT8)
    features = embedder.embed(synthetic_windows(np.arange(5), seed=0))
    assert features.shape == (5, embedder.features)
    assert embedder.features == json.loads(DESCRIPTION.read_text())["features"]
    assert embedder.standardized  # models/federated.py standardizes the embedding for the fleet and says so
    assert np.abs(embedder.embed(synthetic_windows(np.arange(5), seed=0))).max() < 100
    with pytest.raises(TrainingError, match="sha256"):
        OnnxEmbedder(BACKBONE_INT8, sha256="0" * 64)


def test_a_client_trains_signs_and_checks_its_inclusion_proof(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    labels = np.arange(60, dtype=np.int64) % CLASSES
    with LocalDataset(tmp_path / "fl.db") as dataset:
        dataset.add_many(synthetic_windows(labels, seed=1), labels, source="verdict", id_prefix="v")
        client = FederatedClient(device_id="dev-1", key=key, dataset=dataset, embedder=OnnxEmbedder(BACKBONE_INT8))
        head = np.load(INITIAL_HEAD)
        update = client.train(5, head["weight"], head["bias"], TrainingSettings(epochs=20, learning_rate=0.1))
        assert update.training.loss < update.training.loss_before
        assert update.digest == update_digest(update.arrays)
        verify_update(key.public_key(), 5, "dev-1", update.digest, update.signature)

        other = leaf_hash(5, "dev-2", b"\x01" * 32, b"\x02" * 64)
        tree = MerkleTree([update.leaf, other])
        client.accept_proof(5, tree.root, tree.proof(update.leaf))
        record = dataset.round(5)
        assert record is not None and record.verified and record.root == tree.root

        with pytest.raises(ProofError, match="does not lead"):
            client.accept_proof(5, b"\x00" * 32, tree.proof(update.leaf))
        assert dataset.round(5) is not None and not dataset.round(5).verified  # type: ignore[union-attr]
        with pytest.raises(ProofError, match="sent no update"):
            client.accept_proof(6, tree.root, [])


def test_the_fixed_embedder_double_keeps_the_interface() -> None:
    embedder = FixedEmbedder(512, 16)
    assert embedder.embed(synthetic_windows(np.arange(3), seed=0)).shape == (3, 16)
    assert not embedder.standardized


def test_a_client_on_a_standardized_backbone_trains_without_local_standardization(tmp_path: Path) -> None:
    labels = np.arange(40, dtype=np.int64) % 4
    windows = synthetic_windows(labels, seed=2)
    head = np.zeros((4, 16), np.float32), np.zeros(4, np.float32)
    settings = TrainingSettings(epochs=3, learning_rate=0.05)
    updates = {}
    for standardized in (False, True):
        embedder = FixedEmbedder(512, 16, standardized=standardized)
        with LocalDataset(tmp_path / f"fl-{standardized}.db") as dataset:
            dataset.add_many(windows, labels, source="verdict", id_prefix="v")
            client = FederatedClient(
                device_id="dev-1", key=Ed25519PrivateKey.generate(), dataset=dataset, embedder=embedder
            )
            updates[standardized] = client.train(1, *head, settings).training
    features = FixedEmbedder(512, 16).embed(windows)
    plain = train_head(*head, features, labels, TrainingSettings(epochs=3, learning_rate=0.05, standardize=False))
    np.testing.assert_array_equal(updates[True].weight, plain.weight)
    local = train_head(*head, features, labels, settings)
    np.testing.assert_array_equal(updates[False].weight, local.weight)
