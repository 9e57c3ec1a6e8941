"""Which training items a batch draws: shuffled (the default), class-balanced, or by shard.

A class-balanced sampler serves skewed data where the loss weights of
``optim.class_balance`` are not enough: each training item is drawn with probability
proportional to ``n_landmark ** -power`` (its landmark's number of training items), with
replacement, as many draws per epoch as there are items. ``power=1`` draws every landmark
equally often, ``0.5`` halfway (square root), ``0`` as plain shuffling.

Under data-parallel training on tar shards (``data=shards``), :class:`ShardSampler` gives
each rank whole shards, so that no two ranks read the same shard file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, WeightedRandomSampler


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


class ShardSampler(DistributedSampler):
    """A data-parallel training sampler that gives each rank disjoint shards.

    Every epoch the shards are shuffled (``seed + epoch``, the same on every rank) and dealt
    out whole, each to the rank with the fewest items so far; a rank then draws its own
    shards' items in a shuffled order. As in WebDataset's ``split_by_node`` with a nominal
    epoch (``with_epoch``), every rank serves the same number of items, ``ceil(N / ranks)``
    (data-parallel steps must match): a rank that was dealt fewer repeats some of its
    items, one dealt more leaves some for this epoch. Dealing whole shards to the least
    loaded rank keeps that difference under one shard, and a new deal every epoch spreads
    it over the data. It subclasses ``DistributedSampler`` so Lightning keeps it (and calls
    ``set_epoch``) instead of putting its own sampler on the loader.
    """

    def __init__(
        self,
        dataset: Dataset,
        shards: Sequence[int],
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed)
        self.shards = np.asarray(shards)
        if len(self.shards) != len(dataset):
            raise ValueError(f"{len(self.shards)} shard numbers for {len(dataset)} items")
        present = len(np.unique(self.shards))
        if present < self.num_replicas:
            raise ValueError(
                f"the training items lie in {present} shard(s) for {self.num_replicas} "
                "data-parallel ranks: every rank needs a shard of its own; write smaller "
                "shards (python -m landmark_tl.shards per_shard=...)"
            )

    def deal(self) -> list[np.ndarray]:
        """The shard numbers each rank reads in the current epoch."""
        generator = np.random.default_rng(self.seed + self.epoch)
        numbers, counts = np.unique(self.shards, return_counts=True)
        load = np.zeros(self.num_replicas, dtype=np.int64)
        dealt: list[list[int]] = [[] for _ in range(self.num_replicas)]
        for k in generator.permutation(len(numbers)):
            rank = int(np.argmin(load))
            dealt[rank].append(int(numbers[k]))
            load[rank] += counts[k]
        return [np.sort(np.asarray(d, dtype=self.shards.dtype)) for d in dealt]

    def __iter__(self) -> Iterator[int]:
        mine = np.flatnonzero(np.isin(self.shards, self.deal()[self.rank]))
        generator = np.random.default_rng([self.seed, self.epoch, self.rank])
        order = generator.permutation(mine)
        return iter(np.resize(order, self.num_samples).tolist())  # cycles when short
