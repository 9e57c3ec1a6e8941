"""What a stage is: its name, its optimisation numbers, its task-loss weights, its test outputs.

Plain values shared by the strategies, the config schema and the fit loops; the
LightningModule that runs the stages is in ``base.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from landmark_tl.core.hierarchy import TASKS

STAGE_NAMES = ("joint", *TASKS)  # one joint stage, or one stage per task


@dataclass
class StageConfig:
    """Optimisation of one stage: its own epochs, learning rate and early stopping. The
    numbers live in each strategy's YAML (conf/strategy); a stage a strategy runs must have
    ``epochs`` and ``lr`` set (None: not given)."""

    epochs: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    patience: int | None = None  # early-stopping patience on val/loss; None: no early stop


@dataclass
class TestOutputs:
    """Per task: predicted class, target and probabilities on the test split."""

    preds: dict[str, torch.Tensor] = field(default_factory=dict)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    probs: dict[str, torch.Tensor] = field(default_factory=dict)


def other_task(task: str) -> str:
    """The task that is not ``task``; refuses names that are not tasks."""
    if task not in TASKS:
        raise ValueError(f"first={task!r}: use 'category' or 'landmark'")
    return TASKS[1 - TASKS.index(task)]


@dataclass
class LossWeights:
    """Weight of each task's cross-entropy in a one-stage strategy's loss."""

    category: float = 1.0
    landmark: float = 1.0


def check_loss_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Complete and validate per-task loss weights (default 1 each)."""
    merged = {task: 1.0 for task in TASKS} | dict(weights or {})
    if set(merged) != set(TASKS) or min(merged.values()) < 0 or max(merged.values()) == 0:
        raise ValueError(
            "loss_weights needs non-negative 'category' and 'landmark' weights, "
            f"not both zero; got {merged}"
        )
    return merged
