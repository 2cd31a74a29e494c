"""Structured pruning: whole convolution channels removed, so the exported graph is smaller and faster.

Zeroed weights alone give no speed-up on a CPU and do not shrink a dense ONNX file; removing a channel
removes a row of its convolution, its BatchNorm entries, and a column of whatever reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from models.networks import SeriesClassifier


def channel_importance(conv: nn.Conv1d, norm: nn.BatchNorm1d) -> torch.Tensor:
    """Importance of each output channel: the L1 norm of its filter times its BatchNorm scale's magnitude.

    Both factors matter: BatchNorm can scale a strong filter to nothing (network slimming's criterion) and
    a weak filter's output can be amplified; their product estimates how much the channel feeds forward.
    """
    filters = conv.weight.detach().abs().sum(dim=(1, 2))
    assert norm.running_var is not None  # BatchNorm here always tracks running statistics
    scale = (norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)).abs()
    return filters * scale


def prune_channels(model: SeriesClassifier, keep_ratio: float, *, minimum: int = 4) -> SeriesClassifier:
    """A narrower copy of ``model``: each convolution keeps its ``keep_ratio`` most important channels.

    Every layer keeps at least ``minimum`` channels. The copy has the same interface and the surviving
    weights, ready for fine-tuning.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    layers = list(model.features)
    convs = [(index, layer) for index, layer in enumerate(layers) if isinstance(layer, nn.Conv1d)]
    kept: list[torch.Tensor] = []
    for index, conv in convs:
        norm = layers[index + 1]
        assert isinstance(norm, nn.BatchNorm1d)
        count = max(minimum, round(conv.out_channels * keep_ratio))
        order = torch.argsort(channel_importance(conv, norm), descending=True)[:count]
        kept.append(torch.sort(order).values)
    return _narrowed(model, kept)


def _narrowed(model: SeriesClassifier, kept: Sequence[torch.Tensor]) -> SeriesClassifier:
    head = model.head
    pruned = SeriesClassifier(
        model.in_channels,
        [len(channels) for channels in kept],
        model.kernels,
        model.pools,
        head.out_features,
    )
    pruned.normalizes = model.normalizes
    pruned.input_mean.copy_(model.input_mean)
    pruned.input_scale.copy_(model.input_scale)
    source = [layer for layer in model.features if isinstance(layer, nn.Conv1d | nn.BatchNorm1d)]
    target = [layer for layer in pruned.features if isinstance(layer, nn.Conv1d | nn.BatchNorm1d)]
    previous: torch.Tensor | None = None
    with torch.no_grad():
        for block, channels in enumerate(kept):
            conv, norm = source[2 * block], source[2 * block + 1]
            new_conv, new_norm = target[2 * block], target[2 * block + 1]
            assert isinstance(conv, nn.Conv1d) and isinstance(new_conv, nn.Conv1d)
            assert isinstance(norm, nn.BatchNorm1d) and isinstance(new_norm, nn.BatchNorm1d)
            weight = conv.weight[channels]
            if previous is not None:
                weight = weight[:, previous]
            new_conv.weight.copy_(weight)
            if conv.bias is not None and new_conv.bias is not None:
                new_conv.bias.copy_(conv.bias[channels])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_norm, name).copy_(getattr(norm, name)[channels])
            previous = channels
        assert previous is not None
        pruned.head.weight.copy_(head.weight[:, previous])
        pruned.head.bias.copy_(head.bias)
    return copy.deepcopy(pruned).eval()
