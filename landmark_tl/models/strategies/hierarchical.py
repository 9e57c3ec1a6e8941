"""Beyond the study: one landmark head; category probabilities are sums over landmarks.

P(category c) = Σ P(landmark l) over the landmarks l of c. Predictions are decoded top
down: the category with the largest probability, then the most probable landmark inside
it, so the two always agree. The loss is w_l · CE(landmark) + w_c · CE(category
marginal); w_c = 0 by default (the landmark head alone, as in the issue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.strategies.base import OneStageBothTasks, StageConfig, TrunkAndHeads


class Hierarchical(OneStageBothTasks):
    """One stage, ``landmark``; both tasks are scored."""

    stage_name = "landmark"
    default_loss_weights = {"category": 0.0, "landmark": 1.0}

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
        self.net = TrunkAndHeads(
            backbone.num_features, hidden, dropout, {"landmark": hierarchy.num_landmarks}
        )
        members = torch.zeros(hierarchy.num_landmarks, hierarchy.num_categories)
        members[torch.arange(hierarchy.num_landmarks), hierarchy.parent_tensor()] = 1.0
        self.register_buffer("log_membership", members.log(), persistent=False)

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
