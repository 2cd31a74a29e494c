"""The model manifest: what travels with every model artifact.

A runtime that knows nothing else about a model can rebuild its input from the manifest alone:
window size and hop, every preprocessing step, input and output tensor names and shapes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.messages import SensorKind


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ZNormalize(_Spec):
    """Subtract the window's mean and divide by its standard deviation (plus ``epsilon``)."""

    op: Literal["znorm"] = "znorm"
    epsilon: float = Field(default=1e-8, gt=0.0)


class Scale(_Spec):
    """``(x - offset) * factor``, with fixed constants."""

    op: Literal["scale"] = "scale"
    offset: float = 0.0
    factor: float = 1.0


PreprocessStep = Annotated[ZNormalize | Scale, Field(discriminator="op")]


class InputSpec(_Spec):
    name: str
    dtype: Literal["float32"] = "float32"
    shape: list[int | None] = Field(description="None marks the batch dimension.")
    sensor: SensorKind
    unit: str
    window_size: int = Field(ge=1)
    hop: int = Field(ge=1)
    sample_rate_hz: float | None = Field(default=None, gt=0.0)
    preprocessing: list[PreprocessStep] = Field(default_factory=list)


class OutputSpec(_Spec):
    probabilities: str = Field(description="Output tensor of class probabilities, shape [batch, classes].")
    labels: list[str] = Field(min_length=1)
    anomaly_score: str | None = Field(
        default=None,
        description="Output tensor of anomaly scores, shape [batch]; 1.0 is the training set's 99th percentile.",
    )


class Quantization(_Spec):
    scheme: Literal["none", "qdq-int8-static"] = "none"
    per_channel: bool = False
    calibration: str | None = None


class ExportedArtifact(_Spec):
    """The same model converted for another inference backend (a file beside the manifest)."""

    backend: Literal["openvino", "litert"]
    artifact: str = Field(description="File name, relative to the manifest (OpenVINO: the .xml; its .bin beside it).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)
    weights: str | None = Field(default=None, description="OpenVINO's .bin file, if separate.")
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ModelManifest(_Spec):
    """Manifest of one model artifact (JSON beside the artifact)."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: str = Field(min_length=1, max_length=64)
    task: str
    role: Literal["edge", "cloud"]
    format: Literal["onnx"] = "onnx"
    artifact: str = Field(description="File name of the artifact, relative to the manifest.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)
    signature: str | None = Field(default=None, description="Ed25519 signature of the sha256, base64.")
    input: InputSpec
    output: OutputSpec
    quantization: Quantization = Quantization()
    exports: list[ExportedArtifact] = Field(
        default_factory=list, description="Conversions for other backends; ONNX Runtime loads `artifact`."
    )
    parameters: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    distilled_from: str | None = None
    data: str
    source_commit: str | None = None
    rebuild: str
