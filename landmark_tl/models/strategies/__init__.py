"""One LightningModule per training strategy, on a shared base, registered by name.

Importing this package registers the built-in strategies; a new one registers itself with
``@register_strategy`` (see :mod:`landmark_tl.models.strategies.registry`).
"""

from landmark_tl.models.strategies.arcface import ArcFace
from landmark_tl.models.strategies.base import TwoLevelStrategy
from landmark_tl.models.strategies.feature_chain import FeatureChain
from landmark_tl.models.strategies.head_swap import HeadSwap
from landmark_tl.models.strategies.hierarchical import Hierarchical
from landmark_tl.models.strategies.knn import KNN
from landmark_tl.models.strategies.linear_probe import HierarchicalProbe, LinearProbe
from landmark_tl.models.strategies.multi_output import MultiOutput
from landmark_tl.models.strategies.registry import (
    STRATEGIES,
    StrategyConfig,
    register_strategy,
    registered,
)
from landmark_tl.models.strategies.stages import StageConfig

__all__ = [
    "STRATEGIES",
    "ArcFace",
    "FeatureChain",
    "HeadSwap",
    "Hierarchical",
    "HierarchicalProbe",
    "KNN",
    "LinearProbe",
    "MultiOutput",
    "StageConfig",
    "StrategyConfig",
    "TwoLevelStrategy",
    "register_strategy",
    "registered",
]
