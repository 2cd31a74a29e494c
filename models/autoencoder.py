"""Dense autoencoders in the style of the MLPerf Tiny anomaly-detection benchmark, and their structured pruning.

MLPerf Tiny's reference detector is a stack of Dense–BatchNorm–ReLU layers narrowing to a small bottleneck
and widening back, trained to reconstruct normal inputs; the reconstruction error is the anomaly score.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional alias)
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval

from models.training import Advance


def _block(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Linear(inputs, outputs), nn.BatchNorm1d(outputs), nn.ReLU()]


class DenseAutoencoder(nn.Module):
    """``window`` → widths → bottleneck → reversed widths → ``window``, Dense–BatchNorm–ReLU throughout."""

    def __init__(self, window: int, widths: Sequence[int], bottleneck: int) -> None:
        super().__init__()
        self.window, self.bottleneck = window, bottleneck
        self.encoder_widths, self.decoder_widths = tuple(widths), tuple(reversed(widths))
        layers: list[nn.Module] = []
        size = window
        for width in self.encoder_widths:
            layers += _block(size, width)
            size = width
        layers += _block(size, bottleneck)
        size = bottleneck
        for width in self.decoder_widths:
            layers += _block(size, width)
            size = width
        self.layers = nn.Sequential(*layers)
        self.output = nn.Linear(size, window)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Reconstructions, shape ``[batch, window]``."""
        reconstruction: torch.Tensor = self.output(self.layers(windows))
        return reconstruction


class ReconstructionScore(nn.Module):
    """Mean squared reconstruction error, scaled so that 1.0 is the training windows' 99th percentile."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, windows: torch.Tensor, reconstruction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities [batch, 2], anomaly_score [batch])``.

        The "probabilities" are ``[1 / (1 + s), s / (1 + s)]`` for score ``s``: above one half exactly when
        the score is above 1. They are a monotone map of the score, not calibrated probabilities.
        """
        score = (windows - reconstruction).square().mean(-1) * self.scale
        anomalous = score / (1.0 + score)
        return torch.stack([1.0 - anomalous, anomalous], dim=-1), score


class Reconstruction(nn.Module):
    """The autoencoder alone, held as :class:`AnomalyModel` holds it, so that exported node names match."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Reconstructions, shape ``[batch, window]``."""
        reconstruction: torch.Tensor = self.autoencoder(windows)
        return reconstruction


class AnomalyModel(nn.Module):
    """What gets exported: ``window`` in; ``probabilities`` (normal, anomaly) and ``anomaly_score`` out."""

    def __init__(self, autoencoder: nn.Module, scale: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.score = ReconstructionScore(scale)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :class:`ReconstructionScore`."""
        result: tuple[torch.Tensor, torch.Tensor] = self.score(windows, self.autoencoder(windows))
        return result


def unit_importance(linear: nn.Linear, norm: nn.BatchNorm1d) -> torch.Tensor:
    """Importance of each unit of a Dense–BatchNorm layer: L1 norm of its incoming weights × |BatchNorm scale|."""
    assert norm.running_var is not None  # BatchNorm here always tracks running statistics
    scale = (norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)).abs()
    return linear.weight.detach().abs().sum(dim=1) * scale


def prune_units(model: DenseAutoencoder, keep_ratio: float, *, minimum: int = 4) -> DenseAutoencoder:
    """A narrower copy: each hidden layer but the bottleneck keeps its ``keep_ratio`` most important units."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    source = list(model.layers)
    linears = [layer for layer in source if isinstance(layer, nn.Linear)]
    norms = [layer for layer in source if isinstance(layer, nn.BatchNorm1d)]
    bottleneck_index = len(model.encoder_widths)
    kept: list[torch.Tensor] = []
    for index, (linear, norm) in enumerate(zip(linears, norms, strict=True)):
        if index == bottleneck_index:
            kept.append(torch.arange(linear.out_features))
            continue
        count = max(minimum, round(linear.out_features * keep_ratio))
        order = torch.argsort(unit_importance(linear, norm), descending=True)[:count]
        kept.append(torch.sort(order).values)
    encoder = [len(units) for units in kept[:bottleneck_index]]
    pruned = DenseAutoencoder(model.window, encoder, model.bottleneck)
    # The decoder is not always the encoder's mirror once pruned: rebuild its layers at the kept widths.
    decoder = [len(units) for units in kept[bottleneck_index + 1 :]]
    layers: list[nn.Module] = []
    size = model.window
    for width in [*encoder, model.bottleneck, *decoder]:
        layers += _block(size, width)
        size = width
    pruned.layers = nn.Sequential(*layers)
    pruned.decoder_widths = tuple(decoder)
    pruned.output = nn.Linear(size, model.window)
    target_linears = [layer for layer in pruned.layers if isinstance(layer, nn.Linear)]
    target_norms = [layer for layer in pruned.layers if isinstance(layer, nn.BatchNorm1d)]
    previous: torch.Tensor | None = None
    with torch.no_grad():
        for linear, norm, new_linear, new_norm, units in zip(
            linears, norms, target_linears, target_norms, kept, strict=True
        ):
            weight = linear.weight[units]
            new_linear.weight.copy_(weight if previous is None else weight[:, previous])
            new_linear.bias.copy_(linear.bias[units])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_norm, name).copy_(getattr(norm, name)[units])
            previous = units
        assert previous is not None
        pruned.output.weight.copy_(model.output.weight[:, previous])
        pruned.output.bias.copy_(model.output.bias)
    return copy.deepcopy(pruned).eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every Dense–BatchNorm pair folded into one Dense layer.

    In eval mode BatchNorm is an affine map per unit, so it folds into the preceding layer's weights and bias;
    it is replaced by an identity, which keeps every module's name (the int8 export's fp32 prefixes name
    them). The exported graph then has one ``Gemm`` per layer instead of a ``Gemm`` and a
    ``BatchNormalization``, which the runtimes fuse with nothing: in the int8 graph each would be dequantized
    and quantized again around the BatchNorm.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            linear, norm = module[index], module[index + 1]
            if isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                module[index] = fuse_linear_bn_eval(linear, norm)
                module[index + 1] = nn.Identity()
    return folded


class AveragedAutoencoder(nn.Module):
    """An ensemble: the members' reconstructions averaged (then scored like one autoencoder's)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction, shape ``[batch, window]``."""
        return torch.stack([member(windows) for member in self.members]).mean(dim=0)


def train_autoencoder(
    model: nn.Module,
    windows: npt.NDArray[np.float32],
    *,
    epochs: int,
    seed: int,
    validation: npt.NDArray[np.float32] | None = None,
    teacher: nn.Module | None = None,
    teacher_weight: float = 0.5,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    advance: Advance | None = None,
) -> nn.Module:
    """Train to reconstruct ``windows`` (AdamW, MSE); with a ``teacher``, also to match its reconstructions.

    Distillation here means the student learns the teacher's reconstructions beside the inputs, so that its
    errors fall where the teacher's do. With ``validation`` windows (normal, held out), the weights of the
    epoch with the lowest reconstruction error on them are kept (early stopping without cutting the
    schedule short, so every build runs the same number of steps).
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.from_numpy(windows)
    held_out = None if validation is None else torch.from_numpy(validation)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps = epochs * -(-len(inputs) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    if teacher is not None:
        teacher.eval()
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            batch = inputs[order[start : start + batch_size]]
            if len(batch) < 2:  # BatchNorm needs two samples in training mode
                continue
            reconstruction = model(batch)
            loss = F.mse_loss(reconstruction, batch)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(batch)
                loss = (1 - teacher_weight) * loss + teacher_weight * F.mse_loss(reconstruction, target)
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            scheduler.step()
        if held_out is not None:
            model.eval()
            with torch.no_grad():
                error = float(F.mse_loss(model(held_out), held_out))
            if best is None or error < best[0]:
                best = (error, copy.deepcopy(model.state_dict()))
        if advance is not None:
            advance()
    if best is not None:
        model.load_state_dict(best[1])
    return model.eval()


@torch.no_grad()
def reconstruction_errors(model: nn.Module, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Mean squared reconstruction error per window (unscaled)."""
    model.eval()
    inputs = torch.from_numpy(windows)
    return np.asarray((model(inputs) - inputs).square().mean(-1).numpy(), dtype=np.float64)
