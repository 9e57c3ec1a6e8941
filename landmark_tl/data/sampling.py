"""Which training items a batch draws: shuffled (the default) or class-balanced.

A class-balanced sampler serves skewed data where the loss weights of
``optim.class_balance`` are not enough: each training item is drawn with probability
proportional to ``n_landmark ** -power`` (its landmark's number of training items), with
replacement, as many draws per epoch as there are items. ``power=1`` draws every landmark
equally often, ``0.5`` halfway (square root), ``0`` as plain shuffling.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch.utils.data import WeightedRandomSampler


class Sampler(str, Enum):
    none = "none"  # shuffle the training items once per epoch
    balanced = "balanced"  # draw items ∝ n_landmark ** -data.balance_power, with replacement


def balanced_weights(landmarks: torch.Tensor, power: float) -> torch.Tensor:
    """Per item, ``n_landmark ** -power`` (the draw weight of the item)."""
    if power < 0:
        raise ValueError(f"data.balance_power={power}: must be >= 0 (1: balanced, 0: shuffle)")
    counts = torch.bincount(landmarks.long())
    return counts[landmarks.long()].double().pow(-power)


class BalancedSampler(WeightedRandomSampler):
    """torch's WeightedRandomSampler with :func:`balanced_weights`, drawing from its own
    generator, reseeded with ``seed + epoch`` when Lightning starts an epoch (``set_epoch``),
    so a resumed fit draws what the uninterrupted one did."""

    def __init__(self, landmarks: torch.Tensor, power: float = 1.0, seed: int = 0) -> None:
        super().__init__(
            balanced_weights(landmarks, power),
            num_samples=len(landmarks),
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)
