"""Study approach 1: one trunk, two output layers, trained jointly in one fit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from landmark_tl.models.strategies.base import OneStageBothTasks
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import LossWeights


@dataclass
class MultiOutputConfig(StrategyConfig):
    name: str = "multi_output"
    loss_weights: LossWeights = field(default_factory=LossWeights)


@register_strategy(MultiOutputConfig)
class MultiOutput(OneStageBothTasks):
    """loss = w_c · CE(category) + w_l · CE(landmark) over a shared trunk, one stage."""

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(features)
