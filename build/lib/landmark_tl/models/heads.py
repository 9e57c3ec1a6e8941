"""MLP heads: shared hidden layers (part of the trunk) and linear output layers."""

from __future__ import annotations

from collections.abc import Sequence

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
