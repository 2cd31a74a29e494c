"""The machine-readable model card of a task (``<task>.card.json``): every variant, backend, figure and how to rebuild.

Beside it, each shipped ``.onnx`` keeps its :class:`protocol.manifest.ModelManifest`, the contract the edge
agent and the hub load. The card says more than a manifest can: the full input recipe (including steps the
protocol has no name for yet, such as resampling), all variants side by side with their multiply-accumulate
counts, sizes, metrics, and latencies per backend, the peers run on the same split, and the agreement
between backends.
"""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_SUFFIX = ".card.json"


class _Card(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArtifactCard(_Card):
    """One file of a variant and the backend that loads it."""

    file: str
    backend: Literal["onnxruntime", "openvino", "litert", "openvino-weights"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)


class InputCard(_Card):
    """How to turn raw readings into the model's input, in order; any runtime can reproduce it from this."""

    name: str
    shape: list[int | None]
    layout: str = Field(description="What each axis means, e.g. 'batch, sample' or 'batch, channel, sample'.")
    sensor: str
    unit: str
    sample_rate_hz: float | None
    preprocessing: list[dict[str, Any]] = Field(
        description="Steps applied before the graph; 'znorm' and 'scale' as in protocol.manifest, others defined here."
    )
    in_graph: list[str] = Field(default_factory=list, description="Steps the graph itself performs first.")


class VariantCard(_Card):
    """One model variant: what it is, its cost, its figures."""

    role: Literal["cloud", "edge", "edge-reference"]
    precision: Literal["fp32", "int8"]
    description: str
    parameters: int = Field(ge=0)
    macs: int = Field(ge=0, description="Multiply-accumulates per window (Conv and Linear layers).")
    artifacts: list[ArtifactCard]
    metrics: dict[str, float]
    latency_ms: dict[str, float] = Field(
        description="Median per-window latency by backend: batch of one, single stream, one thread."
    )


class PeerCard(_Card):
    """A well-known method run on the same split by the same build."""

    description: str
    metrics: dict[str, float]
    environment: str


class TaskCard(_Card):
    """The whole task."""

    schema_version: Literal[1] = 1
    task: str
    summary: str
    data: str
    validation: str
    input: InputCard
    labels: list[str]
    outputs: list[str]
    variants: dict[str, VariantCard]
    peers: dict[str, PeerCard]
    backend_agreement: dict[str, float] = Field(
        description="Share of test windows on which each backend's edge int8 argmax equals ONNX Runtime's."
    )
    goals: dict[str, str] = Field(default_factory=dict)
    seed: int
    source_commit: str | None
    rebuild: str
    software: dict[str, str]
    machine: str
    kernels: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The kernel caps the build ran with and the fingerprint of its kernels (models.kernels): "
            "a rebuild trains these bytes only on a machine of the same fingerprint. Empty for builds before the "
            "fingerprint was recorded."
        ),
    )


ArtifactBackend = Literal["onnxruntime", "openvino", "litert", "openvino-weights"]


def artifact_card(path: Path, backend: ArtifactBackend) -> ArtifactCard:
    """Digest and size of one file."""
    data = path.read_bytes()
    return ArtifactCard(file=path.name, backend=backend, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


SOFTWARE = (
    "torch",
    "onnx",
    "onnxruntime",
    "openvino",
    "ai-edge-litert",
    "sktime",
    "numba",
    "numpy",
    "scikit-learn",
    "stumpy",
)


def software_versions() -> dict[str, str]:
    """Versions of the packages that shape a build (those installed)."""
    versions = {}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# Instruction-set extensions that change how fast int8 runs, and which kernels torch trains with.
_NOTABLE_CPU_FLAGS = (
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("amx_tile", "AMX"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
    ("asimddp", "Arm dot product"),
    ("i8mm", "Arm int8 matrix multiply"),
)
_CPUINFO = Path("/proc/cpuinfo")


def cpu_description(cpuinfo: str | None = None) -> str:
    """The processor's model name and its notable extensions, from Linux's ``/proc/cpuinfo`` where there is one.

    Both matter to a card: int8 speed depends on them, and so can the weights a seeded build trains to
    (torch picks its CPU kernels by them). Elsewhere: ``platform.processor()``, or ``cpu``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name") or platform.processor() or "cpu"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    notable = [label for flag, label in _NOTABLE_CPU_FLAGS if flag in flags]
    return f"{name} ({', '.join(notable)})" if notable else name


def machine_description() -> str:
    """Architecture, processor and Python, for the latency figures."""
    return f"{platform.machine()} {cpu_description()}, Python {platform.python_version()}"


def write_card(card: TaskCard, directory: Path) -> Path:
    """Write ``<task>.card.json``; returns its path."""
    path = directory / f"{card.task}{CARD_SUFFIX}"
    path.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def read_card(directory: Path, task: str) -> TaskCard:
    """Read a task's card."""
    return TaskCard.model_validate_json((directory / f"{task}{CARD_SUFFIX}").read_text(encoding="utf-8"))
