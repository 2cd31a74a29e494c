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
