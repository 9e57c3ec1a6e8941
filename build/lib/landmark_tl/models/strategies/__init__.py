"""One LightningModule per training strategy, on a shared base."""

from landmark_tl.models.strategies.base import StageConfig, TwoLevelStrategy
from landmark_tl.models.strategies.feature_chain import FeatureChain
from landmark_tl.models.strategies.head_swap import HeadSwap
from landmark_tl.models.strategies.hierarchical import Hierarchical
from landmark_tl.models.strategies.linear_probe import HierarchicalProbe, LinearProbe
from landmark_tl.models.strategies.multi_output import MultiOutput

STRATEGIES: dict[str, type[TwoLevelStrategy]] = {
    "multi_output": MultiOutput,
    "head_swap": HeadSwap,
    "feature_chain": FeatureChain,
    "hierarchical": Hierarchical,
    "linear_probe": LinearProbe,
    "hierarchical_probe": HierarchicalProbe,
}

__all__ = [
    "STRATEGIES",
    "FeatureChain",
    "HeadSwap",
    "Hierarchical",
    "HierarchicalProbe",
    "LinearProbe",
    "MultiOutput",
    "StageConfig",
    "TwoLevelStrategy",
]
