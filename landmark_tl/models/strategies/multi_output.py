"""Strategy 1 of the study: one trunk, two output layers, trained jointly in one fit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.heads import MLP
from landmark_tl.models.strategies.base import TASKS, StageConfig, TwoLevelStrategy


class MultiOutput(TwoLevelStrategy):
    """loss = w_c · CE(category) + w_l · CE(landmark) over a shared trunk."""

    stage_names = ("joint",)

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
        super().__init__(backbone, hierarchy, stages)
        self.loss_weights = {task: 1.0 for task in TASKS} | dict(loss_weights or {})
        if set(self.loss_weights) != set(TASKS) or min(self.loss_weights.values()) < 0:
            raise ValueError(
                f"strategy.loss_weights needs non-negative 'category' and 'landmark', "
                f"got {self.loss_weights}"
            )
        self.trunk = MLP(backbone.num_features, hidden, dropout)
        self.heads = nn.ModuleDict(
            {t: nn.Linear(self.trunk.out_features, self.num_classes[t]) for t in TASKS}
        )

    def stage_tasks(self, stage: str) -> tuple[str, ...]:
        return TASKS

    def loss_weight(self, task: str) -> float:
        return self.loss_weights[task]

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(features)
        return {task: head(shared) for task, head in self.heads.items()}
