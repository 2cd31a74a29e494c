"""Benchmark of federated learning on the fleet, measured side by side in one run.

    python bench/federated.py [--clients 10] [--alpha 0.5] [--rounds 20] [--repeats 3] [--attack-scale 10] [--json FILE]

Task ``plaid`` (PLAID, official split), the training split partitioned across ``clients`` devices by a
Dirichlet(``alpha``) draw per class (non-IID: most devices see a few appliance types mostly), the test split
held out at the hub. Every federated figure comes from the real ServerApp body (``run_federated``) running
Flower's own strategies on real Messages, with the real ClientApp called in-process for each device (no
SuperLink processes, no Ray; ``tests/integration/test_fl_deployment.py`` runs the same app on the deployment
engine). Figures:

1. **Local training, numpy vs torch** (time per epoch over the 537 training windows, median of ``repeats``;
   test accuracy after the same epochs from the same starting head): the numpy head (what devices run),
   the same head in torch, and torch fine-tuning the whole fp32 network (what only a device with torch
   could do).
2. **Federated vs centralized**: held-out accuracy per round for FedAvg, the robust default (FedGeoMedian)
   and FedMedian against the same
   softmax regression trained on all training windows at once (goal ≥ 0.95 of it); rounds to reach the
   goal; wall time per round.
3. **Notarization share** of round time: verifying signatures, hashing and committing, with the in-memory
   notary and with the notary contract on an in-process EVM (when the ``chain`` extra is installed);
   gas per round at 2, 10 and 100 leaves.
4. **Poisoning**: 0 %, 20 % and 40 % of devices send sign-flipped updates scaled by 10 (``--attack-scale``;
   validly signed: compromised devices); final accuracy for FedAvg, the robust default (FedGeoMedian),
   FedMedian, FedTrimmedAvg (β 0.4) and MultiKrum (told the attacker count). Goal: the robust default
   within 5 points of clean at 20 %.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cloud_hub.fl.evaluation import HoldoutEvaluation, embed  # noqa: E402
from cloud_hub.fl.settings import ROBUST_DEFAULT  # noqa: E402
from edge_agent.fl.head import TrainingSettings, accuracy, step_scaling, train_head  # noqa: E402
from edgefleet.federation import Experiment, dirichlet_partition, prepare_fleet, run_experiment  # noqa: E402
from models import federated  # noqa: E402

COMMITTED = federated.COMMITTED
BACKBONE = COMMITTED / federated.BACKBONE_INT8
INITIAL_HEAD = COMMITTED / federated.INITIAL_HEAD
SOURCE_FP32 = COMMITTED / federated.SOURCE_FP32
console = Console(width=max(Console().width, 120))
GOAL_RATIO = 0.95
NETWORK_LEARNING_RATE = 0.005
GOAL_POISON_POINTS = 0.05


def device_settings(epochs: int) -> TrainingSettings:
    """What a device trains with on this backbone: no local standardization where the fleet's is built in."""
    from edge_agent.fl.embedding import OnnxEmbedder

    return TrainingSettings(epochs=epochs, learning_rate=0.05, standardize=not OnnxEmbedder(BACKBONE).standardized)


def _median_seconds(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


NETWORK_OPS = frozenset(
    {"Constant", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "MaxPool", "Relu", "Softmax", "Unsqueeze"}
)
"""The op types :func:`torch_network_from_onnx` rebuilds: a convolutional edge network's, one op after another."""


def torch_network_from_onnx(path: Path) -> Any:
    """The fp32 edge network rebuilt as a torch module from its ONNX graph (Conv1d, ReLU, MaxPool, GAP, Linear).

    Raises ``ValueError`` for a graph with other op types (a MiniRocket-style front end of fixed kernels and
    thresholds has no weights to fine-tune anyway).
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    model = onnx.load(str(path))
    unsupported = sorted({node.op_type for node in model.graph.node} - NETWORK_OPS)
    if unsupported:
        raise ValueError(f"{path.name} holds {', '.join(unsupported)}: not a sequential convolutional network")
    weights = {t.name: torch.tensor(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    layers: list[nn.Module] = []
    for node in model.graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            weight = weights[node.input[1]]
            pads = list(attributes.get("pads", [0, 0]))
            conv = nn.Conv1d(
                weight.shape[1] * int(attributes.get("group", 1)),
                weight.shape[0],
                weight.shape[2],
                stride=int(attributes.get("strides", [1])[0]),
                padding=int(pads[0]),
                dilation=int(attributes.get("dilations", [1])[0]),
                groups=int(attributes.get("group", 1)),
            )
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(weights[node.input[2]])  # type: ignore[union-attr]
            layers.append(conv)
        elif node.op_type == "Relu":
            layers.append(nn.ReLU())
        elif node.op_type == "MaxPool":
            layers.append(
                nn.MaxPool1d(
                    int(attributes["kernel_shape"][0]),
                    stride=int(attributes.get("strides", attributes["kernel_shape"])[0]),
                )
            )
        elif node.op_type == "GlobalAveragePool":
            layers.append(nn.AdaptiveAvgPool1d(1))
        elif node.op_type == "Flatten":
            layers.append(nn.Flatten())
        elif node.op_type == "Gemm":
            weight = weights[node.input[1]]
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data.copy_(weight)
            linear.bias.data.copy_(weights[node.input[2]])
            layers.append(linear)
    return nn.Sequential(*layers)


def local_training(
    train: np.ndarray, labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, *, epochs: int, repeats: int
) -> dict[str, Any]:
    """Figure 1: numpy head, torch head, torch full network; time per epoch and accuracy after ``epochs``."""
    settings = device_settings(1)
    with np.load(INITIAL_HEAD) as head:
        weight, bias = head["weight"], head["bias"]
    backbone = BACKBONE
    embed_s = _median_seconds(lambda: embed(backbone, train), repeats)
    features, test_features = embed(backbone, train), embed(backbone, test)
    numpy_epoch = _median_seconds(lambda: train_head(weight, bias, features, labels, settings), repeats)
    numpy_head = train_head(weight, bias, features, labels, device_settings(epochs))
    figures: dict[str, Any] = {
        "embed_ms": embed_s * 1000,
        "numpy_head": {
            "epoch_ms": numpy_epoch * 1000,
            "accuracy": accuracy(numpy_head.weight, numpy_head.bias, test_features, test_labels),
        },
    }
    try:
        import torch
    except ImportError:
        return figures
    torch.manual_seed(0)
    torch.set_num_threads(1)

    def torch_epochs(module: Any, inputs: Any, count: int, learning_rate: float = 0.05) -> None:
        optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate)
        target = torch.tensor(labels)
        generator = torch.Generator().manual_seed(0)
        for _ in range(count):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(order), 32):
                batch = order[start : start + 32]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(module(inputs[batch]), target[batch]).backward()
                optimizer.step()

    # The same steps as the numpy head (edge_agent.fl.head): over locally standardized features where it
    # standardizes them.
    mean, scale = step_scaling(features, settings)

    def torch_head() -> Any:
        head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        head.weight.data.copy_(torch.tensor(weight * scale))
        head.bias.data.copy_(torch.tensor(bias + weight @ mean))
        return head

    feature_tensor, windows = torch.tensor((features - mean) / scale), torch.tensor(train).unsqueeze(1)
    torch_epochs(torch_head(), feature_tensor, 1)  # warm-up: torch's first backward pass sets itself up
    head_epoch = _median_seconds(lambda: torch_epochs(torch_head(), feature_tensor, 1), repeats)
    trained_head = torch_head()
    torch_epochs(trained_head, feature_tensor, epochs)
    with torch.no_grad():
        test_standardized = torch.tensor((test_features - mean) / scale)
        head_accuracy = float((trained_head(test_standardized).argmax(1).numpy() == test_labels).mean())

    figures["torch_head"] = {"epoch_ms": head_epoch * 1000, "accuracy": head_accuracy}
    try:
        torch_network_from_onnx(SOURCE_FP32)
    except ValueError as exc:
        console.print(f"   the whole network is not fine-tuned: {exc}")
        return figures
    import onnx

    # The backbones standardize the head's input; the network's own head reads it as it is.
    initializers = {item.name: item for item in onnx.load(str(BACKBONE)).graph.initializer}
    centre = onnx.numpy_helper.to_array(initializers[federated.CENTRE])
    spread = onnx.numpy_helper.to_array(initializers[federated.SPREAD])

    def network() -> Any:
        net = torch_network_from_onnx(SOURCE_FP32)
        raw_weight = weight / spread  # the same starting head as the others
        net[-1].weight.data.copy_(torch.tensor(raw_weight))
        net[-1].bias.data.copy_(torch.tensor(bias - raw_weight @ centre))
        return net

    # The whole network takes a smaller step than the head alone (0.05 there undoes the backbone's training).
    net_epoch = _median_seconds(lambda: torch_epochs(network(), windows, 1, NETWORK_LEARNING_RATE), repeats)
    trained_net = network()
    torch_epochs(trained_net, windows, epochs, NETWORK_LEARNING_RATE)
    with torch.no_grad():
        net_accuracy = float((trained_net(torch.tensor(test).unsqueeze(1)).argmax(1).numpy() == test_labels).mean())
    figures["torch_network_fp32"] = {"epoch_ms": net_epoch * 1000, "accuracy": net_accuracy}
    return figures


def centralized_accuracy(features: np.ndarray, labels: np.ndarray, holdout: HoldoutEvaluation, epochs: int) -> float:
    with np.load(INITIAL_HEAD) as head:
        update = train_head(head["weight"], head["bias"], features, labels, device_settings(epochs))
    return accuracy(update.weight, update.bias, holdout.features, holdout.labels)


def evm_notary() -> Any | None:
    try:
        from cloud_hub.notary.chain import Web3Notary
    except ImportError:
        return None
    return Web3Notary.in_process()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python bench/federated.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--poison-rounds", type=int, default=10)
    parser.add_argument("--attack-scale", type=float, default=10.0, help="attackers send global - scale × update")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # Flower logs every round at INFO; attackers' rejected proofs at WARNING

    data, train, test = federated.preprocessed_plaid()
    backbone = BACKBONE
    holdout = HoldoutEvaluation(embed(backbone, test), data.test_labels)
    parts = dirichlet_partition(data.train_labels, arguments.clients, alpha=arguments.alpha, seed=arguments.seed)
    work = Path(tempfile.mkdtemp(prefix="edgefleet-bench-fl-"))
    fleet = prepare_fleet(work / "fleet", [(train[p], data.train_labels[p]) for p in parts])
    sizes = [len(p) for p in parts]
    classes_per_client = [len(np.unique(data.train_labels[p])) for p in parts]
    console.print(
        f"PLAID: {len(train)} training windows over {arguments.clients} devices (Dirichlet α={arguments.alpha}): "
        f"{min(sizes)}–{max(sizes)} windows, {min(classes_per_client)}–{max(classes_per_client)} of 11 classes each; "
        f"held out: {len(test)} test windows"
    )
    results: dict[str, Any] = {"clients": arguments.clients, "alpha": arguments.alpha, "sizes": sizes}

    # 1. Local training.
    console.print("[bold]1. local training (537 windows)[/bold]")
    local = local_training(
        train,
        data.train_labels,
        test,
        data.test_labels,
        epochs=arguments.rounds * arguments.local_epochs // 4,
        repeats=arguments.repeats,
    )
    results["local_training"] = local
    table = Table("trainer", "needs", "ms / epoch", "test accuracy", "ms / epoch vs numpy head")
    base = local["numpy_head"]["epoch_ms"]
    for name, needs in (
        ("numpy_head", "numpy + ONNX Runtime"),
        ("torch_head", "torch"),
        ("torch_network_fp32", "torch, fp32 network"),
    ):
        if name in local:
            row = local[name]
            table.add_row(
                name, needs, f"{row['epoch_ms']:.2f}", f"{row['accuracy']:.3f}", f"{row['epoch_ms'] / base:.1f}×"
            )
    console.print(table)
    console.print(f"   embedding the 537 windows with the int8 backbone (once per round): {local['embed_ms']:.1f} ms")

    # 2. Federated vs centralized.
    central = centralized_accuracy(
        embed(backbone, train), data.train_labels, holdout, arguments.rounds * arguments.local_epochs
    )
    results["centralized_accuracy"] = central
    runs: dict[str, list[Experiment]] = {}
    strategies: tuple[str, ...] = ("fedavg", ROBUST_DEFAULT, "fedmedian")
    for strategy in strategies:
        runs[strategy] = [
            run_experiment(
                fleet,
                backbone=backbone,
                initial_head=INITIAL_HEAD,
                evaluate_fn=holdout,
                state_dir=work / f"{strategy}-{repeat}",
                strategy=strategy,
                rounds=arguments.rounds,
                local_epochs=arguments.local_epochs,
            )
            for repeat in range(arguments.repeats)
        ]
    console.print(f"[bold]2. federated vs centralized[/bold] (centralized softmax regression: {central:.3f})")
    table = Table(
        "strategy",
        "start",
        "after 1",
        "after 5",
        "final",
        "final / central",
        f"rounds to {GOAL_RATIO}×",
        "s / round (median)",
    )
    results["federated"] = {}
    for strategy, experiments in runs.items():
        curve = experiments[0].accuracies
        reach = next((r for r, value in enumerate(curve) if value >= GOAL_RATIO * central), None)
        per_round = statistics.median(e.seconds / arguments.rounds for e in experiments)
        results["federated"][strategy] = {
            "accuracies": curve,
            "ratio": curve[-1] / central,
            "rounds_to_goal": reach,
            "seconds_per_round": per_round,
        }
        table.add_row(
            strategy,
            f"{curve[0]:.3f}",
            f"{curve[1]:.3f}",
            f"{curve[min(5, len(curve) - 1)]:.3f}",
            f"{curve[-1]:.3f}",
            f"{curve[-1] / central:.3f}",
            str(reach),
            f"{per_round:.3f}",
        )
    console.print(table)

    # 3. Notarization share and gas.
    console.print("[bold]3. notarization[/bold]")
    table = Table("notary", "rounds", "verify ms / round", "notarize ms / round", "share of round time", "gas / round")
    results["notarization"] = {}
    memory = runs["fedavg"]
    notaries: list[tuple[str, list[Experiment]]] = [("in-memory", memory)]
    if (chain := evm_notary()) is not None:
        evm_runs = [
            run_experiment(
                fleet,
                backbone=backbone,
                initial_head=INITIAL_HEAD,
                evaluate_fn=holdout,
                state_dir=work / f"evm-{repeat}",
                rounds=arguments.rounds,
                local_epochs=arguments.local_epochs,
                notary=chain if repeat == 0 else evm_notary(),
            )
            for repeat in range(arguments.repeats)
        ]
        notaries.append(("EVM (in-process, Vyper contract)", evm_runs))
    for name, experiments in notaries:
        verify = statistics.median(e.verify_seconds / arguments.rounds for e in experiments)
        notarize = statistics.median(e.notarize_seconds / arguments.rounds for e in experiments)
        share = statistics.median((e.verify_seconds + e.notarize_seconds) / e.seconds for e in experiments)
        gas = sorted({g for e in experiments for g in e.gas_used})
        results["notarization"][name] = {
            "verify_ms": verify * 1000,
            "notarize_ms": notarize * 1000,
            "share": share,
            "gas": gas,
        }
        table.add_row(
            name,
            str(arguments.rounds),
            f"{verify * 1000:.2f}",
            f"{notarize * 1000:.2f}",
            f"{share:.2%}",
            ", ".join(f"{g:,}" for g in gas) or "0",
        )
    console.print(table)
    try:
        from cloud_hub.notary.gas import gas_per_round

        figures = gas_per_round()
        results["gas_per_round"] = {f.leaves: f.gas_used for f in figures}
        console.print(
            "   gas per round (in-process EVM): " + ", ".join(f"{f.leaves} leaves {f.gas_used:,}" for f in figures)
        )
    except ImportError:
        console.print("   gas per round: the chain extra is not installed")

    # 4. Poisoning.
    attack = f"sign-flipped ×{arguments.attack_scale:g} updates; {arguments.poison_rounds} rounds"
    console.print(f"[bold]4. poisoning[/bold] ({attack})")
    shares = (0.0, 0.2, 0.4)
    table = Table("strategy", *(f"{share:.0%} attackers" for share in shares), "20 % vs clean (points)")
    results["poisoning"] = {}
    for strategy, label, beta in (
        ("fedavg", "FedAvg (default)", 0.2),
        ("fedgeomedian", "FedGeoMedian (robust default)", 0.2),
        ("fedmedian", "FedMedian", 0.2),
        ("fedtrimmedavg", "FedTrimmedAvg β 0.4", 0.4),
        ("multikrum", "MultiKrum (knows the count)", 0.2),
    ):
        row = []
        for share in shares:
            attackers = round(share * arguments.clients)
            experiment = run_experiment(
                fleet,
                backbone=backbone,
                initial_head=INITIAL_HEAD,
                evaluate_fn=holdout,
                state_dir=work / f"poison-{strategy}-{attackers}",
                strategy=strategy,
                rounds=arguments.poison_rounds,
                attackers=attackers,
                scale=arguments.attack_scale,
                trim_beta=beta,
                local_epochs=arguments.local_epochs,
            )
            row.append(experiment.accuracies[-1])
        results["poisoning"][strategy] = dict(zip((f"{s:.0%}" for s in shares), row, strict=True))
        table.add_row(label, *(f"{value:.3f}" for value in row), f"{(row[1] - row[0]) * 100:+.1f}")
    console.print(table)

    median = results["poisoning"][ROBUST_DEFAULT]
    fedavg = results["federated"]["fedavg"]
    console.print(
        f"goals: federated / centralized {fedavg['ratio']:.3f} (goal ≥ {GOAL_RATIO}); robust default at 20 % "
        f"{(median['20%'] - median['0%']) * 100:+.1f} points vs clean (goal ≥ {-GOAL_POISON_POINTS * 100:.0f})"
    )
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
