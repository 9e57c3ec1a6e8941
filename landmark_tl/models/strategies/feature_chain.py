"""Study approaches 4 and 5: the first task's model feeds its output to the second's.

Stage 1 fits model A (trunk + output layer) on the first task. Stage 2 fits model B on
the other task from [backbone features ‖ softmax(A(x))]; A is frozen and in eval mode
(a fixed feature), and the backbone does not change, so A's outputs stay those of stage 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.strategies.base import TaskPerStage, TrunkAndHeads
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import StageConfig


@dataclass
class FeatureChainConfig(StrategyConfig):
    name: str = "feature_chain"
    first: str = "landmark"  # category | landmark: the task of model A


@register_strategy(FeatureChainConfig)
class FeatureChain(TaskPerStage):
    """Two stages named after their tasks: model A on ``first``, then model B."""

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        first: str = "landmark",
        hidden: Sequence[int] = (512,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(backbone, hierarchy, stages, first)
        width = backbone.num_features
        self.model_a = TrunkAndHeads(width, hidden, dropout, {first: self.num_classes[first]})
        second = self.second
        self.model_b = TrunkAndHeads(
            width + self.num_classes[first], hidden, dropout, {second: self.num_classes[second]}
        )

    def trainable_in_stage(self, stage: str) -> list[nn.Module]:
        return [self.model_a, self.backbone] if stage == self.first else [self.model_b]

    def kept_in_eval(self, stage: str) -> list[nn.Module]:
        return [self.model_a] if stage == self.second else []

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        logits_a = self.model_a(features)[self.first]
        chained = torch.cat([features, logits_a.softmax(-1)], dim=-1)
        return {self.first: logits_a, self.second: self.model_b(chained)[self.second]}
