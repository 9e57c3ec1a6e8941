"""``arcface``: a cosine-margin landmark head (ArcFace, optionally sub-center ArcFace) as in
the Google Landmark Recognition winners; the category comes from the hierarchy.

Two-level design: one stage, ``landmark``, trains the margin head on the landmark (the
loss is CE of scale · cos with the margin on the target class,
:class:`~landmark_tl.models.heads.CosineMarginHead`), plus ``loss_weights.category`` ×
CE of the category marginal (Σ of its landmarks' probabilities; 0 by default). The
category predicted is the predicted landmark's, so the two always agree.

``classify``: ``centres`` scores each landmark by scale · cos to its nearest centre;
``knn`` classifies by weighted kNN over the head's embeddings of the training images
(:mod:`landmark_tl.models.neighbours`; k and T chosen on the validation split from
``k_grid`` × ``temperatures``), rebuilt at the start of every validation so that the
checkpoint kept holds the neighbours of its own weights (one extra pass over the training
split per epoch: cheap on cached features, an epoch's forward passes when fine-tuned).

Usable on cached features (backbone.freeze=all) and fine-tuned (backbone.freeze=none and
the other freeze policies): the head is an ordinary trained module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.heads import CosineMarginHead
from landmark_tl.models.neighbours import KNNClassifier
from landmark_tl.models.strategies.knn import (
    CategoryFromLandmark,
    check_grid,
    check_k_fits,
    fit_neighbours,
)
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import LossWeights, StageConfig, check_loss_weights

CLASSIFY = ("centres", "knn")


@dataclass
class ArcFaceConfig(StrategyConfig):
    name: str = "arcface"
    scale: float = 30.0
    margin: float = 0.3  # radians, in [0, pi/2)
    subcenters: int = 1  # > 1: sub-center ArcFace, K centres per landmark
    embedding: int | None = None  # a linear projection's width; null: the features
    classify: str = "centres"  # centres | knn (over the head's embeddings)
    k_grid: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    temperatures: list[float] = field(default_factory=lambda: [0.03, 0.07, 0.1])
    loss_weights: LossWeights = field(default_factory=lambda: LossWeights(category=0.0))

    @property
    def approach(self) -> str:
        """``arcface``, or ``arcface (knn)`` when it classifies by neighbours."""
        name = super().approach
        return f"{name} (knn)" if self.classify == "knn" and name == self.name else name


@register_strategy(ArcFaceConfig)
class ArcFace(CategoryFromLandmark):
    """Backbone (frozen or trained) → CosineMarginHead over the landmarks."""

    takes_head = False

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        scale: float = 30.0,
        margin: float = 0.3,
        subcenters: int = 1,
        embedding: int | None = None,
        classify: str = "centres",
        k_grid: Sequence[int] = (10, 20, 50, 100),
        temperatures: Sequence[float] = (0.03, 0.07, 0.1),
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        if classify not in CLASSIFY:
            raise ValueError(f"classify={classify!r}: use one of {list(CLASSIFY)}")
        check_grid(k_grid, temperatures)
        super().__init__(backbone, hierarchy, stages)
        self.loss_weights = check_loss_weights({"category": 0.0} | dict(loss_weights or {}))
        self.head = CosineMarginHead(
            backbone.num_features,
            hierarchy.num_landmarks,
            embedding=embedding,
            scale=scale,
            margin=margin,
            subcenters=subcenters,
        )
        self.classify = classify
        self.k_grid, self.temperatures = tuple(k_grid), tuple(temperatures)
        self.knn = KNNClassifier(hierarchy.num_landmarks, self.head.width)

    def check_split_sizes(self, sizes: Mapping[str, int]) -> None:
        if self.classify == "knn":
            check_k_fits(self.k_grid, sizes["train"])

    def loss_weight(self, task: str) -> float:
        return self.loss_weights[task]

    def trainable_in_stage(self, stage: str) -> list[nn.Module]:
        return [self.head, self.backbone]

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Centres in training (the loss); the chosen classifier otherwise."""
        if self.classify == "knn" and not self.training and len(self.knn.bank):
            return self.with_categories(self.knn(self.head.embed(features)))
        return self.with_categories(self.head(features))

    def _task_loss(
        self, task: str, logits: torch.Tensor, targets: torch.Tensor, split: str
    ) -> torch.Tensor:
        """In training, the landmark's target logit carries the angular margin."""
        if split == "train" and task == "landmark":
            logits = self.head.margin_logits(logits, targets)
        return super()._task_loss(task, logits, targets, split)

    @torch.no_grad()
    def on_validation_epoch_start(self) -> None:
        """With ``classify=knn``: the training images' embeddings of the current weights
        become the neighbours; k and T are chosen on the validation split."""
        if self.classify != "knn":
            return
        mode = self.training
        self.eval()
        fit_neighbours(self, self.knn, self.k_grid, self.temperatures, self.head.embed)
        self.train(mode)
