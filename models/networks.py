"""PyTorch modules of the window models, and the wrapper that gives every exported graph the same interface."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.anomaly import SubspaceScorer


class ConvClassifier(nn.Module):
    """1D CNN over one window: Conv–BatchNorm–ReLU blocks, global average pooling, a linear layer to logits.

    Padding keeps every block at the window's length, and the zero padding at the edges gives the
    network a sense of position (the hour of day matters for daily profiles) despite the pooling.
    """

    def __init__(self, widths: Sequence[int], kernels: Sequence[int], classes: int) -> None:
        super().__init__()
        if len(widths) != len(kernels):
            raise ValueError("widths and kernels must have the same length")
        blocks: list[nn.Module] = []
        channels = 1
        for width, kernel in zip(widths, kernels, strict=True):
            blocks += [nn.Conv1d(channels, width, kernel, padding=kernel // 2), nn.BatchNorm1d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*blocks)
        # AdaptiveAvgPool1d exports as GlobalAveragePool, which ONNX Runtime quantizes (a mean() would not be).
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(channels, classes)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``[batch, classes]``, for windows of shape ``[batch, window]``."""
        features: torch.Tensor = self.pool(self.features(windows.unsqueeze(1)))
        logits: torch.Tensor = self.head(features.flatten(1))
        return logits


class AveragedEnsemble(nn.Module):
    """Members' class probabilities averaged; returns their log, so it can stand wherever logits are expected."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Log of the mean class probabilities, shape ``[batch, classes]``."""
        log_probabilities = torch.stack([member(windows).log_softmax(-1) for member in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))


class Transposed(nn.Module):
    """``model`` reading each ``[batch, row, column]`` image transposed: columns become its channels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """The model's output for the transposed images."""
        output: torch.Tensor = self.model(windows.transpose(1, 2))
        return output


class SubspaceAnomalyScore(nn.Module):
    """The in-graph form of :class:`models.anomaly.SubspaceScorer`; constants are buffers, not trained."""

    residual_projector: torch.Tensor

    def __init__(self, scorer: SubspaceScorer) -> None:
        super().__init__()
        self.register_buffer("residual_projector", torch.from_numpy(scorer.residual_projector.copy()))
        self.scale = float(scorer.scale)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Anomaly scores, shape ``[batch]``, of z-normalized windows."""
        residual = windows @ self.residual_projector
        variance_error = (1.0 - windows.square().mean(-1)).square()
        return (residual.square().mean(-1) + variance_error) * self.scale


class WindowModel(nn.Module):
    """What gets exported: ``window`` in, ``probabilities`` and ``anomaly_score`` out.

    ``classifier`` returns logits; the softmax is in the graph so every runtime gets probabilities.
    """

    def __init__(self, classifier: nn.Module, anomaly: SubspaceAnomalyScore) -> None:
        super().__init__()
        self.classifier = classifier
        self.anomaly = anomaly

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities [batch, classes], anomaly_score [batch])``."""
        return self.classifier(windows).softmax(-1), self.anomaly(windows)


def parameter_count(module: nn.Module) -> int:
    """Number of trained parameters (buffers such as the anomaly projector are not counted)."""
    return sum(parameter.numel() for parameter in module.parameters())


def multiply_accumulates(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass over ``example`` (batch of one), counting Conv1d and Linear layers.

    Element-wise work (BatchNorm, ReLU, pooling, softmax, the anomaly projector) is left out: it is small
    beside the convolutions and is what every variant of a task shares.
    """
    total = 0

    def count(layer: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv1d):
            per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0]
            total += output.numel() * per_output
        elif isinstance(layer, nn.Linear):
            total += output.numel() * layer.in_features

    handles = [
        layer.register_forward_hook(count) for layer in module.modules() if isinstance(layer, nn.Conv1d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            module.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return total


class SeriesClassifier(nn.Module):
    """1D CNN over a window of one or more channels: Conv–BatchNorm–ReLU(–MaxPool) blocks, average pooling, linear.

    ``input_mean`` and ``input_std`` (one per channel) make a fixed affine normalization the graph's first
    step, for sensors whose absolute level carries information (per-window z-normalization would erase
    it). Max pooling after a block (``pools[i] > 1``) shortens long series cheaply.
    """

    input_mean: torch.Tensor
    input_scale: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        kernels: Sequence[int],
        pools: Sequence[int],
        classes: int,
        *,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not len(widths) == len(kernels) == len(pools):
            raise ValueError("widths, kernels and pools must have the same length")
        self.in_channels = in_channels
        self.kernels, self.pools = tuple(kernels), tuple(pools)
        self.normalizes = input_mean is not None
        mean = torch.tensor(input_mean if input_mean is not None else [0.0] * in_channels, dtype=torch.float32)
        std = torch.tensor(input_std if input_std is not None else [1.0] * in_channels, dtype=torch.float32)
        self.register_buffer("input_mean", mean.reshape(1, in_channels, 1))
        self.register_buffer("input_scale", (1.0 / std).reshape(1, in_channels, 1))
        blocks: list[nn.Module] = []
        channels = in_channels
        for width, kernel, pool in zip(widths, kernels, pools, strict=True):
            blocks += [nn.Conv1d(channels, width, kernel, padding=kernel // 2), nn.BatchNorm1d(width), nn.ReLU()]
            if pool > 1:
                blocks.append(nn.MaxPool1d(pool))
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(channels, classes)

    @property
    def widths(self) -> tuple[int, ...]:
        """Output channels of each convolution."""
        return tuple(layer.out_channels for layer in self.features if isinstance(layer, nn.Conv1d))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, classes]`` for windows ``[batch, sample]`` (one channel) or ``[batch, channel, sample]``."""
        if windows.dim() == 2:
            windows = windows.unsqueeze(1)
        if self.normalizes:
            windows = (windows - self.input_mean) * self.input_scale
        features: torch.Tensor = self.pool(self.features(windows))
        logits: torch.Tensor = self.head(features.flatten(1))
        return logits


class ProbabilityModel(nn.Module):
    """What gets exported for a task without an anomaly head: ``window`` in, ``probabilities`` out."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[batch, classes]``."""
        probabilities: torch.Tensor = self.classifier(windows).softmax(-1)
        return probabilities
