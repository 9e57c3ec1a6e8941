"""Study approaches 2 and 3: train for one task, swap the output layer, train for the other.

Stage 1 fits trunk + the first task's output layer. Stage 2 keeps the trunk's weights,
puts the other task's (fresh) output layer in place and fits it; by default only that
layer trains (the study's choice), ``train_in_stage2`` can add ``trunk`` and ``backbone``.
The first task's output layer is kept, so the final model still predicts both tasks; its
test scores are taken at the end of stage 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.strategies.base import TaskPerStage, TrunkAndHeads
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import StageConfig

STAGE2_PARTS = ("head", "trunk", "backbone")


@dataclass
class HeadSwapConfig(StrategyConfig):
    name: str = "head_swap"
    first: str = "landmark"  # category | landmark
    # what trains in stage 2: head (always; the study's choice), optionally trunk, backbone
    train_in_stage2: list[str] = field(default_factory=lambda: ["head"])


@register_strategy(HeadSwapConfig)
class HeadSwap(TaskPerStage):
    """Two stages named after their tasks, ``first`` then the other."""

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        first: str = "landmark",
        train_in_stage2: Sequence[str] = ("head",),
        hidden: Sequence[int] = (512,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(backbone, hierarchy, stages, first)
        parts = set(train_in_stage2)
        if "head" not in parts or not parts <= set(STAGE2_PARTS):
            raise ValueError(
                f"train_in_stage2={list(train_in_stage2)}: list parts of "
                f"{list(STAGE2_PARTS)}, always including 'head' (the new output layer)"
            )
        self.train_in_stage2 = tuple(p for p in STAGE2_PARTS if p in parts)
        self.net = TrunkAndHeads(backbone.num_features, hidden, dropout, self.num_classes)

    def trainable_in_stage(self, stage: str) -> list[nn.Module]:
        if stage == self.first:
            return [self.net.trunk, self.net.heads[self.first], self.backbone]
        parts = {
            "head": self.net.heads[self.second],
            "trunk": self.net.trunk,
            "backbone": self.backbone,
        }
        return [parts[p] for p in self.train_in_stage2]

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(features)
