"""Beyond the study: one landmark head; category probabilities are sums over landmarks.

P(category c) = Σ P(landmark l) over the landmarks l of c. Predictions are decoded top
down: the category with the largest probability, then the most probable landmark inside
it, so the two always agree. The loss is w_l · CE(landmark) + w_c · CE(category
marginal); w_c = 0 by default (the landmark head alone, as in the issue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from landmark_tl.models.strategies.base import OneStageBothTasks
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import LossWeights


@dataclass
class HierarchicalConfig(StrategyConfig):
    name: str = "hierarchical"
    # category > 0 adds a cross-entropy on the category marginal
    loss_weights: LossWeights = field(default_factory=lambda: LossWeights(category=0.0))


@register_strategy(HierarchicalConfig)
class Hierarchical(OneStageBothTasks):
    """One stage, ``landmark``; both tasks are scored."""

    stage_name = "landmark"
    default_loss_weights = {"category": 0.0, "landmark": 1.0}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As :class:`OneStageBothTasks`; adds the landmark → category membership."""
        super().__init__(*args, **kwargs)
        hierarchy = self.hierarchy
        members = torch.zeros(hierarchy.num_landmarks, hierarchy.num_categories)
        members[torch.arange(hierarchy.num_landmarks), hierarchy.parent_tensor()] = 1.0
        self.register_buffer("log_membership", members.log(), persistent=False)

    def net_outputs(self) -> dict[str, int]:
        return {"landmark": self.num_classes["landmark"]}

    def decode(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Category by marginal probability, then the best landmark inside that category."""
        category = logits["category"].argmax(-1)
        inside = self.log_membership.T[category]  # 0 for the category's landmarks, -inf else
        return {"category": category, "landmark": (logits["landmark"] + inside).argmax(-1)}

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        landmark = self.net(features)["landmark"]
        log_p = landmark.log_softmax(-1)
        # (..., L, 1) + (L, C), summed over L: any leading dims (stacked heads of a sweep)
        category = torch.logsumexp(log_p[..., :, None] + self.log_membership, dim=-2)
        return {"category": category, "landmark": landmark}
