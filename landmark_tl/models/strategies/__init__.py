"""One LightningModule per training strategy, on a shared base."""

from landmark_tl.models.strategies.base import StageConfig, TwoLevelStrategy
from landmark_tl.models.strategies.multi_output import MultiOutput

STRATEGIES: dict[str, type[TwoLevelStrategy]] = {"multi_output": MultiOutput}

__all__ = ["STRATEGIES", "MultiOutput", "StageConfig", "TwoLevelStrategy"]
