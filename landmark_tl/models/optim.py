"""The optimisation recipe of every stage: optimiser, learning-rate schedule, label smoothing.

The defaults are the study's (Adam, constant learning rate, plain cross-entropy). The
fine-tuning recipe timm users expect — AdamW with no weight decay on norms and biases,
layer-wise learning-rate decay over the backbone, cosine schedule with per-step linear
warmup, label smoothing — is a choice of values here; optimisers and schedules come from
timm (``create_optimizer_v2``, ``create_scheduler_v2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from torch import nn

PLATEAU_MONITOR = "val/loss"


class OptimizerName(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"  # with momentum (and Nesterov, as timm's sgd)


class SchedulerName(str, Enum):
    none = "none"  # constant learning rate (after any warmup)
    cosine = "cosine"  # cosine decay to min_lr over the stage, per step
    step = "step"  # times decay_rate every decay_epochs, per step
    plateau = "plateau"  # times decay_rate when the monitor stalls for patience_epochs


@dataclass
class Recipe:
    """Optimiser and schedule of each stage (a stage's lr and weight_decay are its own)."""

    optimizer: OptimizerName = OptimizerName.adam
    momentum: float = 0.9  # sgd
    layer_decay: float | None = None  # e.g. 0.75: each backbone layer down gets ×0.75 lr
    scheduler: SchedulerName = SchedulerName.none
    warmup_epochs: float = 0.0  # linear warmup from warmup_lr, per step
    warmup_lr: float = 1e-6
    min_lr: float = 0.0  # cosine: final learning rate
    decay_epochs: float = 10  # step
    decay_rate: float = 0.1  # step, plateau
    patience_epochs: int = 2  # plateau
    label_smoothing: float = 0.0
    class_balance: bool = False  # weight each class's training loss by N / (K · n_class)
    mixup: float = 0.0  # mixup alpha (timm's Mixup); 0: off; needs images, not cached features
    cutmix: float = 0.0  # cutmix alpha; 0: off
    mix_prob: float = 1.0  # probability of mixing a batch
    mix_switch_prob: float = 0.5  # with both on: probability of cutmix instead of mixup

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes during a stage."""
        return self.scheduler is not SchedulerName.none or self.warmup_epochs > 0

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def problems(self, stage_epochs: dict[str, int], prefix: str = "optim") -> list[str]:
        """Values that cannot work, as 'key=value: why' lines."""
        found = []
        if not 0.0 <= self.label_smoothing < 1.0:
            found.append(f"{prefix}.label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            found.append(f"{prefix}.layer_decay={self.layer_decay}: must be in (0, 1] or null")
        for key in ("mixup", "cutmix"):
            if getattr(self, key) < 0:
                found.append(f"{prefix}.{key}={getattr(self, key)}: must be >= 0 (0: off)")
        for key in ("mix_prob", "mix_switch_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                found.append(f"{prefix}.{key}={getattr(self, key)}: must be in [0, 1]")
        if self.warmup_epochs < 0:
            found.append(f"{prefix}.warmup_epochs={self.warmup_epochs}: must be >= 0")
        for stage, epochs in stage_epochs.items():
            if self.warmup_epochs >= epochs:
                found.append(
                    f"{prefix}.warmup_epochs={self.warmup_epochs}: not shorter than "
                    f"strategy.stages.{stage}.epochs={epochs}; shorten the warmup"
                )
        return found


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """N / (K · n_c) per class c of ``labels`` (scikit-learn's "balanced"); 0 for a class
    with no example, which then never contributes."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes)
    weights = len(labels) / (num_classes * counts.clamp(min=1).float())
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def backbone_groups(
    model: nn.Module, lr: float, weight_decay: float, recipe: Recipe, lr_ratio: float = 1.0
) -> list[dict[str, Any]]:
    """The trainable parameters of a timm ``model`` in groups at ``lr × lr_ratio``: no weight
    decay on norms, biases and the model's ``no_weight_decay()`` names; with
    ``layer_decay``, timm's layer-wise decay over the model's own block grouping
    (``group_matcher``): the last layer keeps the rate, each one nearer the input × decay."""
    if recipe.layer_decay is None:
        groups = param_groups_weight_decay(model, weight_decay)
    else:
        skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
        groups = param_groups_layer_decay(
            model, weight_decay, no_weight_decay_list=skip, layer_decay=recipe.layer_decay
        )
    for group in groups:  # applied here once, so that any schedule scales every group alike
        group["lr"] = lr * lr_ratio * group.pop("lr_scale", 1.0)
    return [group for group in groups if group["params"]]


def build_optimizer(
    module: nn.Module,
    backbone: nn.Module,
    lr: float,
    weight_decay: float,
    recipe: Recipe,
    backbone_lr_ratio: float = 1.0,
) -> torch.optim.Optimizer:
    """timm's optimiser for the recipe over the trainable parameters of ``module`` in
    groups, each parameter in exactly one: the parameters outside ``backbone`` (found by
    identity, whatever wraps the backbone) at ``lr`` with no weight decay on norms and
    biases; the backbone's as :func:`backbone_groups` at ``lr × backbone_lr_ratio``."""
    inside = {id(p) for p in backbone.parameters()}
    groups = []
    for group in param_groups_weight_decay(module, weight_decay):
        params = [p for p in group["params"] if id(p) not in inside]
        groups.append(group | {"params": params, "lr": lr})
    groups += backbone_groups(backbone, lr, weight_decay, recipe, backbone_lr_ratio)
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise RuntimeError("no trainable parameters")
    return create_optimizer_v2(
        groups,
        opt=recipe.optimizer.value,
        lr=lr,
        weight_decay=weight_decay,
        momentum=recipe.momentum,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, epochs: int, steps_per_epoch: int
) -> Any | None:
    """timm's scheduler for the recipe (None: constant learning rate, no warmup)."""
    if not recipe.scheduled:
        return None
    per_epoch = recipe.scheduler is SchedulerName.plateau  # on val/loss (PLATEAU_MONITOR)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        # "step" with an endless decay period: a constant rate after the warmup
        sched="step" if recipe.scheduler is SchedulerName.none else recipe.scheduler.value,
        num_epochs=epochs - recipe.warmup_epochs,  # after the warmup (warmup_prefix)
        decay_epochs=recipe.decay_epochs if recipe.scheduler is SchedulerName.step else 10**9,
        decay_rate=recipe.decay_rate,
        patience_epochs=recipe.patience_epochs,
        plateau_mode="min",
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        warmup_prefix=True,  # the schedule starts at the full rate after the warmup
        step_on_epochs=per_epoch,
        updates_per_epoch=max(1, steps_per_epoch),
    )
    return scheduler


class TwoLevelMixup:
    """timm's Mixup/CutMix on an image batch for both tasks: the landmark targets are mixed
    (with label smoothing), the category targets are derived from them through the
    hierarchy, so the two stay consistent. An odd last image stays unmixed (timm pairs the
    batch with its reverse)."""

    def __init__(self, recipe: Recipe, landmark_to_category: torch.Tensor) -> None:
        self.num_landmarks = len(landmark_to_category)
        self.to_category = torch.nn.functional.one_hot(landmark_to_category).float()
        self.smoothing = recipe.label_smoothing
        self.mix = Mixup(
            mixup_alpha=recipe.mixup,
            cutmix_alpha=recipe.cutmix,
            prob=recipe.mix_prob,
            switch_prob=recipe.mix_switch_prob,
            label_smoothing=recipe.label_smoothing,
            num_classes=self.num_landmarks,
        )

    def __call__(
        self, images: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if images.ndim != 4:
            raise ValueError("mixup/cutmix need images, not cached features")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.clone()
        soft = mixup_target(landmarks, self.num_landmarks, smoothing=self.smoothing)
        even = len(x) - len(x) % 2
        if even:
            x[:even], soft[:even] = self.mix(x[:even], landmarks[:even])
        category = soft @ self.to_category.to(soft)
        return x, {"landmark": soft, "category": category}
