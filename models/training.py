"""Seeded, deterministic training loops shared by the model tasks: supervised training and distillation."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional alias)
from torch import nn

Advance = Callable[[], None]
"""Called once per finished epoch, to drive a progress bar."""


def make_deterministic(seed: int) -> None:
    """Seed Python, numpy and torch, and make torch single-threaded and deterministic.

    One thread because the order of floating-point reductions across threads changes the last bits, and
    over hundreds of epochs those bits change the model. This is process-wide: a build is a batch job.
    """
    random.seed(seed)
    np.random.seed(seed)  # for third-party code that draws from the global generator
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def stratified_folds(
    labels: npt.NDArray[np.int64], folds: int, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    """Split indices into ``folds`` folds with each class spread evenly; each fold's indices sorted."""
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # Continue the round-robin where the previous class stopped, so fold sizes differ by at most one.
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return [np.flatnonzero(assignment == fold) for fold in range(folds)]


def znormalize(windows: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Per-window z-normalization, the same formula as ``protocol.preprocessing`` (population std)."""
    mean = windows.mean(-1, keepdim=True)
    std = windows.std(-1, unbiased=False, keepdim=True)
    return (windows - mean) / (std + epsilon)


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving perturbations of normalized windows; results are normalized again, as the edge would."""

    max_shift: int = 1
    """Readings by which a window may shift in time (edges repeat): a day's profile starting an hour early or late."""
    noise: float = 0.1
    """Standard deviation of Gaussian jitter, in units of the window's standard deviation."""

    def __call__(self, windows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Perturbed and re-normalized copies of ``windows``, shape ``[batch, window]``."""
        batch, length = windows.shape
        if self.max_shift:
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (batch,), generator=generator)
            positions = (torch.arange(length).unsqueeze(0) - shifts.unsqueeze(1)).clamp(0, length - 1)
            windows = torch.gather(windows, 1, positions)
        windows = windows + self.noise * torch.randn(windows.shape, generator=generator)
        return znormalize(windows)


@dataclass(frozen=True)
class SeriesAugmentation:
    """Label-preserving perturbations of ``[batch, sample]`` or ``[batch, channel, sample]`` windows.

    Unlike :class:`Augmentation`, the result is re-normalized only when the task's preprocessing
    z-normalizes (``renormalize``): raw sensor windows keep their level.
    """

    max_shift: int = 2
    """Samples by which a window may shift in time (edges repeat)."""
    noise: float = 0.05
    """Standard deviation of Gaussian jitter, in units of each channel's standard deviation in the window."""
    scale: float = 0.1
    """Amplitude drawn from ``1 ± scale`` per window (a sensor's gain, a person's vigour)."""
    renormalize: bool = True

    def __call__(self, windows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Perturbed copies of ``windows``."""
        batch, length = windows.shape[0], windows.shape[-1]
        broadcast = (batch,) + (1,) * (windows.dim() - 1)
        if self.max_shift:
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (batch,), generator=generator)
            positions = (torch.arange(length).unsqueeze(0) - shifts.unsqueeze(1)).clamp(0, length - 1)
            positions = positions.reshape(batch, *([1] * (windows.dim() - 2)), length).expand_as(windows)
            windows = torch.gather(windows, -1, positions)
        spread = windows.std(-1, keepdim=True) + 1e-6
        windows = windows + self.noise * spread * torch.randn(windows.shape, generator=generator)
        if self.scale:
            windows = windows * (1.0 + self.scale * (2.0 * torch.rand(broadcast, generator=generator) - 1.0))
        return znormalize(windows) if self.renormalize else windows


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule for one training run (AdamW with a one-cycle learning rate)."""

    epochs: int
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    label_smoothing: float = 0.1
    augmentation: Augmentation | SeriesAugmentation = Augmentation()


@dataclass(frozen=True)
class Distillation:
    """How a student learns from a teacher: a blend of the softened teacher distribution and the labels."""

    temperature: float = 2.0
    teacher_weight: float = 0.7
    """Weight of the KL term against the teacher; the rest goes to cross-entropy with the true labels."""
    mixup: float = 0.5
    """Up to this share of another window is blended in; the teacher labels the blends, which have no true label."""


def _optimizer(
    model: nn.Module, recipe: Recipe, samples: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * -(-samples // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.learning_rate, total_steps=steps)
    return optimizer, scheduler


def train_classifier(
    model: nn.Module,
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    recipe: Recipe,
    *,
    seed: int,
    advance: Advance | None = None,
) -> nn.Module:
    """Train ``model`` (logits out) on normalized windows for a fixed number of epochs; returns it in eval mode.

    No early stopping: the number of epochs is part of the recipe, so cross-validated figures describe
    exactly what the final fit does.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.from_numpy(windows), torch.from_numpy(labels)
    optimizer, scheduler = _optimizer(model, recipe, len(inputs))
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            logits = model(recipe.augmentation(inputs[batch], generator))
            loss = F.cross_entropy(logits, targets[batch], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            scheduler.step()
        if advance is not None:
            advance()
    return model.eval()


def distil(
    student: nn.Module,
    teacher: nn.Module,
    windows: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    recipe: Recipe,
    distillation: Distillation,
    *,
    seed: int,
    advance: Advance | None = None,
) -> nn.Module:
    """Train ``student`` to match ``teacher`` (both logits out) on augmented and mixed-up windows."""
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.from_numpy(windows), torch.from_numpy(labels)
    optimizer, scheduler = _optimizer(student, recipe, len(inputs))
    teacher.eval()
    student.train()
    temperature = distillation.temperature
    for _ in range(recipe.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            augmented = recipe.augmentation(inputs[batch], generator)
            partners = recipe.augmentation(
                inputs[torch.randint(0, len(inputs), (len(batch),), generator=generator)], generator
            )
            share = distillation.mixup * torch.rand((len(batch),) + (1,) * (inputs.dim() - 1), generator=generator)
            mixed = (1 - share) * augmented + share * partners
            if not isinstance(recipe.augmentation, SeriesAugmentation) or recipe.augmentation.renormalize:
                mixed = znormalize(mixed)
            both = torch.cat([augmented, mixed])
            with torch.no_grad():
                teacher_log_probabilities = F.log_softmax(teacher(both) / temperature, dim=-1)
            logits = student(both)
            # Scaled by T² so the soft term's gradients keep their size as the temperature changes (Hinton et al.).
            soft = F.kl_div(
                F.log_softmax(logits / temperature, dim=-1),
                teacher_log_probabilities,
                log_target=True,
                reduction="batchmean",
            ) * (temperature**2)
            hard = F.cross_entropy(logits[: len(batch)], targets[batch])
            loss = distillation.teacher_weight * soft + (1 - distillation.teacher_weight) * hard
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            scheduler.step()
        if advance is not None:
            advance()
    return student.eval()


@torch.no_grad()
def predict_probabilities(model: nn.Module, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Class probabilities of a logits model on normalized windows."""
    model.eval()
    return np.asarray(model(torch.from_numpy(windows)).softmax(-1).numpy(), dtype=np.float32)
