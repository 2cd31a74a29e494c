"""A federated fleet on one machine: devices with keys and labelled data, for the loopback deployment,
the end-to-end tests and ``bench/federated.py``.

Composition only: each device is an edge-agent dataset (:mod:`edge_agent.fl.dataset`) and an Ed25519 key
pair; the hub side reads the public keys from one directory. :func:`in_process_nodes` binds each device to
the real ClientApp, called directly (no SuperNode), so Flower's strategies run on real Messages in-process;
:func:`poisoned` turns a node into an attacker that sends a sign-flipped, scaled update which it signs with
its own (valid) key, as a compromised device would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

NodeHandler = Callable[..., object]


@dataclass(frozen=True, slots=True)
class FleetDevice:
    device_id: str
    node_id: int
    key: Path
    dataset: Path
    examples: int

    def node_config(self, backbone: Path) -> dict[str, str]:
        """The SuperNode's ``--node-config`` for this device."""
        return {
            "device-id": self.device_id,
            "device-key": str(self.key),
            "dataset": str(self.dataset),
            "backbone": str(backbone),
        }


@dataclass(frozen=True, slots=True)
class Fleet:
    devices: list[FleetDevice]
    device_keys: Path
    """Directory of ``<device-id>.pem`` public keys (what the hub reads)."""


def dirichlet_partition(
    labels: npt.NDArray[np.int64], clients: int, *, alpha: float, seed: int, min_examples: int = 5
) -> list[npt.NDArray[np.int64]]:
    """Indices per client: each class split across clients by Dirichlet(alpha) shares (smaller alpha, less IID).

    Redrawn (with the next seed) until every client holds at least ``min_examples`` windows.
    """
    for attempt in itertools.count():
        rng = np.random.default_rng(seed + attempt)
        parts: list[list[int]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(part) for part in parts) >= min_examples:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    raise AssertionError("unreachable")


def write_key_pair(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key


def prepare_fleet(
    directory: Path,
    partitions: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    *,
    prefix: str = "dev",
) -> Fleet:
    """Devices ``dev-1`` … with a key pair each and their labelled windows stored as hub verdicts."""
    from edge_agent.fl.dataset import LocalDataset

    keys = directory / "device-keys"
    keys.mkdir(parents=True, exist_ok=True)
    devices = []
    for index, (windows, labels) in enumerate(partitions, start=1):
        device_id = f"{prefix}-{index}"
        home = directory / device_id
        write_key_pair(home / "device.key", keys / f"{device_id}.pem")
        with LocalDataset(home / "fl.db") as dataset:
            dataset.add_many(windows, labels, source="verdict", id_prefix=f"{device_id}-verdict-")
        devices.append(FleetDevice(device_id, index, home / "device.key", home / "fl.db", len(labels)))
    return Fleet(devices=devices, device_keys=keys)


def in_process_nodes(fleet: Fleet, backbone: Path) -> dict[int, Callable[..., object]]:
    """Node id → a handler that runs the real ClientApp for that device (for ``InProcessGrid``)."""
    from flwr.app import Context, RecordDict

    from edge_agent.fl.client_app import app as client_app

    def handler(device: FleetDevice) -> Callable[..., object]:
        context = Context(
            run_id=1,
            node_id=device.node_id,
            node_config=dict(device.node_config(backbone)),
            state=RecordDict(),
            run_config={},
        )
        return lambda message: client_app(message, context)

    return {device.node_id: handler(device) for device in fleet.devices}


def poisoned(handler: Callable[..., object], device: FleetDevice, *, scale: float) -> Callable[..., object]:
    """An attacker: replies ``global - scale * (trained - global)`` (sign-flipped, scaled), validly signed."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message

    from protocol.updates import RecordNames as R
    from protocol.updates import sign_update, update_digest

    key = serialization.load_pem_private_key(device.key.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)

    def attack(message: Message) -> Message:
        reply = handler(message)
        assert isinstance(reply, Message)
        if reply.has_error() or message.metadata.message_type != "train":
            return reply
        sent = message.content[R.ARRAYS]
        trained = reply.content[R.ARRAYS]
        assert isinstance(sent, ArrayRecord) and isinstance(trained, ArrayRecord)
        arrays = {
            name: (sent[name].numpy() - scale * (trained[name].numpy() - sent[name].numpy())).astype(np.float32)
            for name in trained
        }
        claim = reply.content[R.UPDATE]
        assert isinstance(claim, ConfigRecord)
        round_id = claim[R.ROUND_ID]
        assert isinstance(round_id, int)
        digest = update_digest(arrays)
        reply.content[R.ARRAYS] = ArrayRecord({name: Array(value) for name, value in arrays.items()})
        claim[R.DIGEST] = digest
        claim[R.SIGNATURE] = sign_update(key, round_id, device.device_id, digest)
        return reply

    return attack


@dataclass(frozen=True, slots=True)
class Experiment:
    """One in-process federated run: held-out accuracy after each round (index 0: the starting head)."""

    strategy: str
    attackers: int
    accuracies: list[float]
    seconds: float
    verify_seconds: float
    aggregate_seconds: float
    notarize_seconds: float
    gas_used: list[int]


def run_experiment(
    fleet: Fleet,
    *,
    backbone: Path,
    initial_head: Path,
    evaluate_fn: Callable[..., object],
    state_dir: Path,
    strategy: str = "fedavg",
    rounds: int = 5,
    attackers: int = 0,
    scale: float = 10.0,
    local_epochs: int = 5,
    learning_rate: float = 0.05,
    trim_beta: float = 0.2,
    notary: object | None = None,
    ledger: object | None = None,
) -> Experiment:
    """Run the real ServerApp body with Flower's strategies on real Messages, devices called in-process.

    The first ``attackers`` devices send sign-flipped updates scaled by ``scale`` (validly signed).
    """
    import time

    from cloud_hub.fl.coordinator import run_federated
    from cloud_hub.fl.devices import DeviceKeyDirectory
    from cloud_hub.fl.grid import InProcessGrid
    from cloud_hub.fl.settings import RunSettings
    from cloud_hub.notary import InMemoryNotary, InMemoryRoundLedger

    nodes = in_process_nodes(fleet, backbone)
    for device in fleet.devices[:attackers]:
        nodes[device.node_id] = poisoned(nodes[device.node_id], device, scale=scale)
    settings = RunSettings.from_run_config(
        {
            "num-rounds": rounds,
            "strategy": strategy,
            "min-nodes": len(nodes),
            "fraction-evaluate": 0.0,
            "trim-beta": trim_beta,
            "krum-malicious": attackers,
            "krum-select": max(1, len(nodes) - attackers),
            "local-epochs": local_epochs,
            "learning-rate": learning_rate,
            "device-keys": str(fleet.device_keys),
            "initial-head": str(initial_head),
            "state-dir": str(state_dir),
        }
    )
    started = time.perf_counter()
    outcome = run_federated(
        InProcessGrid(nodes),  # type: ignore[arg-type]
        settings,
        notary=notary or InMemoryNotary(),  # type: ignore[arg-type]
        ledger=ledger or InMemoryRoundLedger(),  # type: ignore[arg-type]
        device_keys=DeviceKeyDirectory(fleet.device_keys),
        evaluate_fn=evaluate_fn,  # type: ignore[arg-type]
    )
    seconds = time.perf_counter() - started
    return Experiment(
        strategy=strategy,
        attackers=attackers,
        accuracies=[float(outcome.server_metrics[r]["holdout-accuracy"]) for r in sorted(outcome.server_metrics)],
        seconds=seconds,
        verify_seconds=sum(r.verify_seconds for r in outcome.rounds),
        aggregate_seconds=sum(r.aggregate_seconds for r in outcome.rounds),
        notarize_seconds=sum(r.notarize_seconds for r in outcome.rounds),
        gas_used=[int(getattr(r.receipt, "gas_used", 0) or 0) for r in outcome.rounds],
    )


def loopback_run(
    work_dir: Path,
    *,
    devices: int = 3,
    rounds: int = 3,
    strategy: str = "fedavg",
    alpha: float = 0.5,
    seed: int = 0,
    tls: bool = False,
    overrides: dict[str, object] | None = None,
    on_event: Callable[[str], None] = lambda message: None,
) -> Path:
    """Run the whole loop on this machine: PLAID split non-IID across ``devices`` devices, a SuperLink and a
    SuperNode per device as processes, ``rounds`` notarized rounds, the next int8 model built, signed and
    registered. Returns the run's state directory (``edgefleet fl status --state-dir`` reads it).
    """
    from cloud_hub.fl.deployment import LoopbackDeployment, generate_tls
    from cloud_hub.fl.errors import DeploymentError
    from models import federated

    committed = federated.COMMITTED
    data, train, test = federated.preprocessed_plaid()
    parts = dirichlet_partition(data.train_labels, devices, alpha=alpha, seed=seed)
    fleet = prepare_fleet(work_dir / "fleet", [(train[p], data.train_labels[p]) for p in parts])
    on_event(f"{devices} devices hold {', '.join(str(len(p)) for p in parts)} labelled windows (Dirichlet α={alpha})")
    holdout = work_dir / "holdout.npz"
    np.savez(holdout, windows=test, labels=data.test_labels)
    signing_key = work_dir / "model-signing.key"
    if not signing_key.exists():
        write_key_pair(signing_key, work_dir / "model-signing.pub")
    state = work_dir / "state"
    backbone = committed / federated.BACKBONE_INT8
    run_config: dict[str, object] = {
        "num-rounds": rounds,
        "strategy": strategy,
        "min-nodes": devices,
        "device-keys": str(fleet.device_keys),
        "initial-head": str(committed / federated.INITIAL_HEAD),
        "state-dir": str(state),
        "backbone-int8": str(backbone),
        "holdout": str(holdout),
        "backbone-fp32": str(committed / federated.BACKBONE_FP32),
        "calibration": str(committed / federated.CALIBRATION),
        "task-description": str(committed / federated.DESCRIPTION),
        "model-signing-key": str(signing_key),
        **(overrides or {}),
    }
    certificates = generate_tls(work_dir / "tls") if tls else None
    with LoopbackDeployment(
        work_dir / "deployment",
        [device.node_config(backbone) for device in fleet.devices],
        tls=certificates,
        node_auth=tls,
    ) as deployment:
        on_event(
            f"SuperLink on {deployment.address} ({'TLS, SuperNode authentication' if tls else 'insecure'}), "
            f"{devices} SuperNodes"
        )
        run_id = deployment.submit(run_config)
        on_event(f"run {run_id} submitted; waiting for {rounds} rounds")
        status = deployment.wait(run_id, timeout=600 + 120 * rounds)
        if status != "finished:completed":
            raise DeploymentError(f"run {run_id} ended {status}; logs under {deployment.work_dir}")
    return state
