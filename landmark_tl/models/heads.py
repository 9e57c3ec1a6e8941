"""Heads: MLP (shared hidden layers, part of the trunk) and the cosine-margin head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Sequential):
    """Linear → ReLU → Dropout for each hidden width; ``out_features`` is the last width.

    With no hidden widths it is the identity and ``out_features == in_features``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (), dropout: float = 0.0):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"head.dropout={dropout} must be in [0, 1)")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            if h <= 0:
                raise ValueError(f"head.hidden widths must be positive, got {list(hidden)}")
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = width


class CosineMarginHead(nn.Module):
    """ArcFace (Deng et al. 2019), with sub-centres (Deng et al. 2020) as an option.

    Features are optionally projected to ``embedding`` dims, then L2-normalised; each class
    has ``subcenters`` unit centre vectors and its cosine is the largest over them. The
    forward gives ``scale · cos θ`` (what classifies); :meth:`margin_logits` replaces the
    target class's entry by ``scale · cos(θ + margin)`` for the training loss. Where
    θ + m would pass π (cos θ < cos(π − m)), the target logit is ``scale · (cos θ −
    m · sin m)`` instead, as in insightface, so that it keeps falling as θ grows.
    Own module: timm has no margin head (its ``NormLinear`` is the margin-free cosine).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        embedding: int | None = None,
        scale: float = 30.0,
        margin: float = 0.3,
        subcenters: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(
                f"margin={margin}: an angle in radians in [0, pi/2) (e.g. 0.3); beyond it "
                "cos(theta + margin) stops falling with theta"
            )
        if not scale > 0:
            raise ValueError(f"scale={scale}: must be > 0 (e.g. 30)")
        if subcenters < 1:
            raise ValueError(f"subcenters={subcenters}: must be >= 1")
        if embedding is not None and not 1 <= embedding <= in_features:
            raise ValueError(
                f"embedding={embedding}: the projection must have 1 to {in_features} dims "
                f"(the backbone's feature width), or null for the features themselves"
            )
        self.scale, self.margin, self.subcenters = scale, margin, subcenters
        self.project = nn.Identity() if embedding is None else nn.Linear(in_features, embedding)
        self.width = in_features if embedding is None else embedding
        self.centres = nn.Parameter(torch.empty(num_classes * subcenters, self.width))
        nn.init.xavier_uniform_(self.centres)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of backbone features."""
        return F.normalize(self.project(features), dim=-1)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) cosine of each class: the largest over its sub-centres."""
        cos = self.embed(features) @ F.normalize(self.centres, dim=-1).T
        return cos.unflatten(-1, (-1, self.subcenters)).amax(dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(features)

    def margin_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``logits`` (scale · cos θ) with the target class's entry at scale · cos(θ + m)."""
        cos = (logits.gather(1, targets[:, None]) / self.scale).clamp(-1.0, 1.0)
        sin = (1.0 - cos.square()).clamp_min(0.0).sqrt()
        shifted = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        past_pi = cos <= math.cos(math.pi - self.margin)
        shifted = torch.where(past_pi, cos - self.margin * math.sin(self.margin), shifted)
        return logits.scatter(1, targets[:, None], self.scale * shifted)
