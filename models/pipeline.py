"""The steps every task's build shares, whatever its models: progress and scratch space, the three variants'
names, latencies and protocol manifests, the card's variant and peer entries, goals, and the markdown card's
common parts.

A recipe (:mod:`models.classification`, :mod:`models.series_anomaly`, :mod:`models.italy_power`) trains its
models its own way and hands the results to these functions, so that every task's artifacts, manifests and
cards come out the same way.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.cards import PeerCard, TaskCard, VariantCard, artifact_card
from models.export import file_digest, write_manifest
from models.packaging import EdgeExports, manifest_exports, variant_latencies
from models.peers import PeerResult
from models.runtimes import Backend
from protocol.manifest import InputSpec, ModelManifest, OutputSpec, Quantization

REPOSITORY = Path(__file__).resolve().parent.parent
VARIANTS = ("cloud_fp32", "edge_fp32", "edge_int8")
CARD_ROLES: dict[str, Literal["cloud", "edge", "edge-reference"]] = {
    "cloud_fp32": "cloud",
    "edge_fp32": "edge-reference",
    "edge_int8": "edge",
}
# The edge fp32 model gets a manifest too: where int8 is slower on a CPU, an agent can run it instead.
MANIFEST_ROLES: tuple[tuple[str, Literal["cloud", "edge"]], ...] = (
    ("cloud_fp32", "cloud"),
    ("edge_int8", "edge"),
    ("edge_fp32", "edge"),
)


@dataclass(frozen=True)
class BuildSteps:
    """What a recipe reports its progress to, and where it keeps what it does not ship."""

    scratch: Path
    describe: Callable[[str], None]
    """Names the phase the build is in."""
    advance: Callable[[], None]
    """Counts one epoch done."""


@contextmanager
def build_steps(task_name: str, epochs: int) -> Iterator[BuildSteps]:
    """A progress bar over ``epochs`` training epochs, and a scratch folder removed afterwards."""
    with (
        Progress(
            TextColumn("[bold]{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs"),
            TimeElapsedColumn(),
        ) as progress,
        tempfile.TemporaryDirectory(prefix=f"edgefleet-{task_name}-") as scratch,
    ):
        bar = progress.add_task("", total=epochs)

        def describe(phase: str) -> None:
            progress.update(bar, description=phase)

        def advance() -> None:
            progress.advance(bar)

        yield BuildSteps(Path(scratch), describe, advance)


def variant_names(task_name: str) -> dict[str, str]:
    """``<task>_<variant>`` of each shipped variant, cloud first."""
    return {variant: f"{task_name}_{variant}" for variant in VARIANTS}


def measure_latencies(
    directory: Path, names: Mapping[str, str], window: npt.NDArray[np.float32], backends: Sequence[Backend]
) -> dict[str, dict[str, float]]:
    """Per-window latency of each variant: the fp32 ones on ONNX Runtime, the int8 one on every backend."""
    return {
        variant: variant_latencies(
            directory, names[variant], window, backends if variant == "edge_int8" else ["onnxruntime"]
        )
        for variant in ("cloud_fp32", "edge_fp32", "edge_int8")
    }


def latency_metrics(latencies: Mapping[str, float]) -> dict[str, float]:
    """A variant's latencies as manifest metrics (``latency_ms_<backend>``), so an agent can pick the faster."""
    return {f"latency_ms_{backend}": milliseconds for backend, milliseconds in latencies.items()}


@dataclass(frozen=True)
class ManifestCommon:
    """What the three manifests of a task share."""

    task: str
    version: str
    input: InputSpec
    output: OutputSpec
    data: str
    commit: str | None
    calibration: str
    exports: EdgeExports


def write_manifests(
    common: ManifestCommon,
    directory: Path,
    names: Mapping[str, str],
    parameters: Mapping[str, int],
    metrics: Mapping[str, Mapping[str, float]],
) -> list[Path]:
    """Write the protocol manifests of the cloud, edge int8 and edge fp32 artifacts; returns their paths."""
    written = []
    for variant, role in MANIFEST_ROLES:
        path = directory / f"{names[variant]}.onnx"
        sha256, size = file_digest(path)
        manifest = ModelManifest(
            name=names[variant],
            version=common.version,
            task=common.task,
            role=role,
            artifact=path.name,
            sha256=sha256,
            bytes=size,
            input=common.input,
            output=common.output,
            quantization=(
                Quantization(scheme="qdq-int8-static", per_channel=True, calibration=common.calibration)
                if variant == "edge_int8"
                else Quantization()
            ),
            exports=manifest_exports(common.exports) if variant == "edge_int8" else [],
            parameters=parameters[variant],
            metrics={key: round(value, 6) for key, value in metrics[variant].items()},
            distilled_from=names["cloud_fp32"] if role == "edge" else None,
            data=common.data,
            source_commit=common.commit,
            rebuild=rebuild_command(common.task),
        )
        written.append(write_manifest(manifest, directory))
    return written


def rebuild_command(task_name: str) -> str:
    """The command that rebuilds a task's artifacts."""
    return f"edgefleet models build {task_name}"


def variant_cards(
    directory: Path,
    names: Mapping[str, str],
    exports: EdgeExports,
    *,
    descriptions: Mapping[str, str],
    parameters: Mapping[str, int],
    macs: Mapping[str, int],
    metrics: Mapping[str, Mapping[str, float]],
    latencies: Mapping[str, dict[str, float]],
) -> dict[str, VariantCard]:
    """The card's entry of each variant: the edge int8 one lists every backend's file, the others their ``.onnx``."""
    return {
        variant: VariantCard(
            role=CARD_ROLES[variant],
            precision="int8" if variant == "edge_int8" else "fp32",
            description=descriptions[variant],
            parameters=parameters[variant],
            macs=macs[variant],
            artifacts=(
                list(exports.artifacts)
                if variant == "edge_int8"
                else [artifact_card(directory / f"{name}.onnx", "onnxruntime")]
            ),
            metrics={key: round(value, 6) for key, value in metrics[variant].items()},
            latency_ms=latencies[variant],
        )
        for variant, name in names.items()
    }


def classifier_peer_cards(peers: Mapping[str, PeerResult]) -> dict[str, PeerCard]:
    """The card's entries of MiniRocket and 1-NN DTW."""
    return {
        key: PeerCard(
            description=peer.description,
            metrics={"test_accuracy": round(peer.test_accuracy, 6), "fit_and_predict_seconds": round(peer.seconds, 2)},
            environment=peer.environment,
        )
        for key, peer in peers.items()
    }


def backends_goal(backend_agreement: Mapping[str, float]) -> str:
    """The goal that every backend's argmax agrees with ONNX Runtime's on 99 % of the test windows."""
    worst = min(backend_agreement.values(), default=1.0)
    return f"{'met' if worst >= 0.99 else 'missed'}: lowest argmax agreement {worst:.1%} (goal 99 %)"


def rounded(values: Mapping[str, float]) -> dict[str, float]:
    """Figures as the cards and manifests record them."""
    return {key: round(value, 6) for key, value in values.items()}


def latency_rows(task_name: str, card: TaskCard) -> str:
    """Markdown rows ``| artifact | backend | µs |`` of every variant and backend in the card."""
    return "\n".join(
        f"| `{task_name}_{variant}` | {backend} | {milliseconds * 1000:.0f} |"
        for variant, entry in card.variants.items()
        for backend, milliseconds in entry.latency_ms.items()
    )


def edge_files(card: TaskCard) -> str:
    """The edge int8 model's files with their sizes, for a sentence."""
    return ", ".join(
        f"`{artifact.file}` ({artifact.bytes:,} bytes)" for artifact in card.variants["edge_int8"].artifacts
    )


def agreement_text(card: TaskCard) -> str:
    """Each backend's argmax agreement with ONNX Runtime, for a sentence."""
    return ", ".join(f"{backend} {share:.1%}" for backend, share in card.backend_agreement.items()) or "none"


def skipped_text(skipped: Mapping[str, str]) -> str:
    """Markdown lines naming the backends not built and why."""
    return "".join(f"\n- Not built: {backend} ({reason})." for backend, reason in skipped.items())


def bullets(lines: Mapping[str, str] | Sequence[str]) -> str:
    """Markdown bullets: ``- `name`: text`` for a mapping, ``- text`` for a sequence."""
    if isinstance(lines, Mapping):
        return "\n".join(f"- `{name}`: {text}" for name, text in lines.items())
    return "\n".join(f"- {text}" for text in lines)


def build_summary(
    task_name: str,
    *,
    seed: int,
    quick: bool,
    paths: Mapping[str, Path],
    manifests: Sequence[Path],
    markdown: Path,
    card: Path,
    **figures: Any,
) -> dict[str, Any]:
    """The JSON-able summary a build returns: its artifacts and whatever figures the recipe adds."""
    return {
        "task": task_name,
        "seed": seed,
        "quick": quick,
        "artifacts": {
            "cloud": str(paths["cloud_fp32"]),
            "edge": str(paths["edge_int8"]),
            "manifests": [str(path) for path in manifests],
            "card": str(markdown),
            "task_card": str(card),
        },
        **figures,
    }


GOALS = {"cloud_over_int8": 10.0, "fp32_over_int8": 1.5, "quality_retained": 0.97, "size_ratio": 0.25}
"""The benchmark goals of issue 4: latency cloud/int8 and fp32/int8 (at least), quality int8/cloud (at
least), bytes int8/cloud (at most)."""


def ratio_goals(
    task_name: str,
    latencies: Mapping[str, Mapping[str, float]],
    quality: Mapping[str, float],
    sizes: Mapping[str, int],
    *,
    metric: str,
) -> dict[str, str]:
    """The four ratios of the benchmark, as the card's goals (ONNX Runtime latencies of the build machine)."""

    def verdict(value: float, goal: float, *, at_most: bool = False) -> str:
        met = value <= goal if at_most else value >= goal
        gap = abs(value - goal)
        return "met" if met else f"missed by {gap:.2f}" if gap >= 0.005 else f"missed by {gap:.3f}"

    cloud, fp32, int8 = (latencies[variant]["onnxruntime"] for variant in VARIANTS)
    retained = quality["edge_int8"] / quality["cloud_fp32"] if quality["cloud_fp32"] else float("nan")
    size = sizes["edge_int8"] / sizes["cloud_fp32"]
    slower = (
        f"; int8 is slower than fp32 on this CPU: run `{task_name}_edge_fp32` (its manifest lies beside the int8 "
        "one; an agent with `fastest_variant = true` times both on its device and runs the faster)"
        if int8 > fp32
        else ""
    )
    return {
        "latency_cloud_over_edge_int8": (
            f"{verdict(cloud / int8, GOALS['cloud_over_int8'])}: {cloud / int8:.1f}× (goal ≥ 10×; ONNX Runtime, "
            "one window, one thread, build machine; `bench/models.py` measures it side by side)"
        ),
        "latency_edge_fp32_over_edge_int8": (
            f"{verdict(fp32 / int8, GOALS['fp32_over_int8'])}: {fp32 / int8:.2f}× (goal ≥ 1.5×){slower}"
        ),
        "quality_retained_edge_int8_over_cloud": (
            f"{verdict(retained, GOALS['quality_retained'])}: {retained:.3f} of the cloud model's {metric} "
            "(goal ≥ 0.97)"
        ),
        "size_edge_int8_over_cloud": (
            f"{verdict(size, GOALS['size_ratio'], at_most=True)}: {size:.3f} of the cloud model's bytes (goal ≤ 0.25)"
        ),
    }
