"""Statistics for comparing runs: batched macro F1, bootstrap intervals, paired bootstrap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from landmark_tl.core.threads import torch_threads
from landmark_tl.evaluation.counts import class_counts, macro_f1_from_counts

LEVEL = 0.95


def batched_macro_f1(preds: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro F1 of each row of two (R, n) integer label arrays, as an (R,) float64 array.

    The bootstrap's form (thousands of resamples in one pass) of the shared counting
    kernel, :func:`landmark_tl.evaluation.counts.class_counts` (the arrays are viewed as
    tensors, not copied): a class absent from both the predictions and the targets of a
    row is left out of that row's mean.

    On one torch thread, as numpy's ``bincount`` that it replaced ran: on a busy 2-core
    machine two threads measured 5-50x slower here (benchmarks/metric_kernel.py).
    """
    preds, targets = np.atleast_2d(preds), np.atleast_2d(targets)
    with torch_threads(1):
        counts = class_counts(
            torch.as_tensor(preds, dtype=torch.long),
            torch.as_tensor(targets, dtype=torch.long),
            num_classes,
        )
        return macro_f1_from_counts(counts).numpy()


def resample_indices(
    strata: Sequence[object], resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(resamples, n) indices drawn with replacement *within* each stratum.

    With the true landmark as stratum, every resample keeps each class's test count, as
    the stratified split did, so no class drops out of a resample's macro F1 by chance.
    """
    _, group, sizes = np.unique(np.asarray(strata), return_inverse=True, return_counts=True)
    group = group.ravel()
    members = np.argsort(group, kind="stable")  # indices grouped by stratum, in order
    starts = np.cumsum(sizes) - sizes
    # one vectorised draw (no loop over strata: 10k landmarks stay fast)
    draws = rng.integers(0, sizes[group], size=(resamples, len(group)))
    return members[starts[group] + draws]


def seed_averaged_f1(
    labels: Sequence[tuple[np.ndarray, np.ndarray]],
    indices: Sequence[np.ndarray],
    num_classes: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per resample, the macro F1 averaged over a resample of the seeds.

    A two-level bootstrap: ``labels[i]`` is seed i's (preds, targets) and ``indices[i]``
    its (B, n) image resamples (shared between approaches on the same test images, which
    pairs them); each resample also draws the seeds with replacement, so the spread covers
    training randomness as well as the choice of test images.
    """
    per_seed = np.stack(
        [
            batched_macro_f1(p[idx], t[idx], num_classes)
            for (p, t), idx in zip(labels, indices, strict=True)
        ]
    )
    seeds, resamples = per_seed.shape
    drawn = rng.integers(0, seeds, size=(resamples, seeds))
    return per_seed[drawn, np.arange(resamples)[:, None]].mean(axis=1)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval holding ``level`` of ``samples``."""
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of (best − other) on the same resampled test images."""

    diff_low: float
    diff_high: float
    share_at_least_best: float
    p_value: float = 1.0  # two-sided bootstrap p-value of "no difference" (uncorrected)

    @property
    def distinguishable(self) -> bool:
        """True when the interval of the difference excludes 0."""
        return not self.diff_low <= 0.0 <= self.diff_high


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of "the difference is 0" from its bootstrap samples: twice the
    smaller share of samples on either side of 0, with the +1 correction that keeps it
    above 0 for a finite number of resamples."""
    resamples = len(differences)
    below = (np.sum(differences <= 0) + 1) / (resamples + 1)
    above = (np.sum(differences >= 0) + 1) / (resamples + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def paired_comparison(best: np.ndarray, other: np.ndarray, level: float = LEVEL) -> Comparison:
    """Compare two per-resample score arrays drawn on the same resamples."""
    low, high = percentile_interval(best - other, level)
    return Comparison(low, high, float(np.mean(other >= best)), bootstrap_p_value(best - other))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (in the input order): reject hypothesis i at
    family-wise level α when its adjusted p-value is ≤ α. The i-th smallest p-value is
    multiplied by (m − i) (i from 0), then made non-decreasing and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]
