"""The model manifest: what travels with every model artifact.

A runtime that knows nothing else about a model can rebuild its input from the manifest alone:
window size and hop, every preprocessing step, input and output tensor names and shapes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class Resample(_Spec):
    """Linear interpolation of each window (last axis) to a new number of samples, first and last sample kept.

    Either ``length`` (a fixed number of samples) or both rates (``round(n * target / source)`` samples) is
    given. Sample ``i`` of the output sits at ``i * (n - 1) / (length - 1)`` on the input's sample grid.
    """

    op: Literal["resample"] = "resample"
    length: int | None = Field(default=None, ge=2, description="Samples out; or give both rates instead.")
    source_rate_hz: float | None = Field(default=None, gt=0.0)
    target_rate_hz: float | None = Field(default=None, gt=0.0)
    method: Literal["linear"] = "linear"

    @model_validator(mode="after")
    def _one_target(self) -> Resample:
        rates = (self.source_rate_hz, self.target_rate_hz)
        if self.length is None and None in rates:
            raise ValueError("resample needs `length`, or both `source_rate_hz` and `target_rate_hz`")
        if self.length is not None and rates != (None, None):
            raise ValueError("resample takes `length` or the two rates, not both")
        return self


class FitLength(_Spec):
    """Pad or crop each window (last axis) to exactly ``length`` samples.

    ``where`` says which end gives or takes: ``end`` keeps the first ``length`` samples and pads after
    them; ``start`` keeps the last ones and pads before them; ``both`` centres the window (an odd sample
    falls at the end).
    """

    op: Literal["fit_length"] = "fit_length"
    length: int = Field(ge=1)
    pad: float = Field(default=0.0, allow_inf_nan=False, description="Value appended where a window is short.")
    where: Literal["end", "start", "both"] = "end"


class Mfcc(_Spec):
    """Mel-frequency cepstral coefficients of an audio window (last axis): ``[..., n_mfcc, frames]``.

    1. Frames of ``frame_length`` samples every ``hop`` samples, no padding: ``1 + (n - frame_length) // hop``.
    2. Each frame times the ``window`` (periodic Hann: ``0.5 - 0.5 cos(2 pi k / frame_length)``).
    3. Power spectrum ``|rfft(frame, n_fft)|^2``, divided by ``n_fft`` when ``spectrum_norm`` is ``n_fft``.
    4. ``n_mels`` triangular filters with peak 1 (no area normalization), edges equally spaced between
       ``fmin`` and ``fmax`` on the HTK mel scale ``2595 log10(1 + f / 700)``; FFT bin ``k`` is at
       ``k * sample_rate / n_fft`` Hz.
    5. ``ln(mel energy + log_offset)``.
    6. DCT of type ``dct_type`` with ``dct_norm`` normalization over the bands; the first ``n_mfcc`` kept.
    """

    op: Literal["mfcc"] = "mfcc"
    sample_rate: int = Field(ge=1, description="Hz; the rate the window was sampled at.")
    frame_length: int = Field(ge=2)
    hop: int = Field(ge=1)
    n_fft: int = Field(ge=2)
    window: Literal["hann_periodic"] = "hann_periodic"
    spectrum_norm: Literal["n_fft", "none"] = "n_fft"
    mel_scale: Literal["htk"] = "htk"
    n_mels: int = Field(ge=1)
    fmin: float = Field(ge=0.0, allow_inf_nan=False)
    fmax: float = Field(gt=0.0, allow_inf_nan=False)
    log: Literal["natural"] = "natural"
    log_offset: float = Field(gt=0.0, allow_inf_nan=False)
    dct_type: Literal[2] = 2
    dct_norm: Literal["ortho"] = "ortho"
    n_mfcc: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Mfcc:
        if self.frame_length > self.n_fft:
            raise ValueError(f"frame_length {self.frame_length} exceeds n_fft {self.n_fft}")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need fmin < fmax <= sample_rate / 2; got fmin {self.fmin}, fmax {self.fmax}, "
                f"sample_rate {self.sample_rate}"
            )
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} exceeds n_mels {self.n_mels}")
        return self


class Frame(_Spec):
    """Read each flat window as an image of ``height`` rows of ``width`` pixels of ``channels`` values
    (row by row, channels interleaved: ``[..., height, width, channels]``, OpenCV's layout). A window
    already shaped so passes unchanged."""

    op: Literal["frame"] = "frame"
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    channels: int = Field(default=3, ge=1, le=4)


class Grayscale(_Spec):
    """Grey level of each pixel of a colour image ``[..., height, width, 3]``: ``[..., height, width]``.

    ``weights`` are for red, green and blue (ITU-R BT.601 by default, as OpenCV's ``COLOR_BGR2GRAY``);
    ``channel_order`` says which order the image holds them in (OpenCV delivers ``bgr``). No rounding.
    """

    op: Literal["grayscale"] = "grayscale"
    channel_order: Literal["bgr", "rgb"] = "bgr"
    weights: tuple[float, float, float] = (0.299, 0.587, 0.114)


class Resize(_Spec):
    """Resize images ``[..., height, width]`` to ``[..., height, width]`` of this step.

    ``area``: each output pixel is the mean of the input area it covers (fractional pixels weighted by
    their overlap), as OpenCV's ``INTER_AREA`` when shrinking. ``bilinear``: half-pixel centres
    (``align_corners=False``), edge pixels repeated, no antialiasing, as OpenCV's ``INTER_LINEAR``.
    """

    op: Literal["resize"] = "resize"
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    interpolation: Literal["area", "bilinear"]


PreprocessStep = Annotated[
    ZNormalize | Scale | Resample | FitLength | Mfcc | Frame | Grayscale | Resize, Field(discriminator="op")
]


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
