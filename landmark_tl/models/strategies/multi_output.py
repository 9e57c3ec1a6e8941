"""Study approach 1: one trunk, two output layers, trained jointly in one fit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.strategies.base import (
    LossWeights,
    OneStageBothTasks,
    StageConfig,
    TrunkAndHeads,
)
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy


@dataclass
class MultiOutputConfig(StrategyConfig):
    name: str = "multi_output"
    loss_weights: LossWeights = field(default_factory=LossWeights)


@register_strategy(MultiOutputConfig)
class MultiOutput(OneStageBothTasks):
    """loss = w_c · CE(category) + w_l · CE(landmark) over a shared trunk, one stage."""

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.1,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(backbone, hierarchy, stages, loss_weights)
        self.net = TrunkAndHeads(backbone.num_features, hidden, dropout, self.num_classes)

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(features)
