"""A strategy is one module that registers itself: this file alone adds one and trains it
through ``strategy=toy`` (no change to the package, no YAML)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
import torch

import landmark_tl
from landmark_tl.core.errors import ConfigError, UsageError
from landmark_tl.models.backbone import create_backbone
from landmark_tl.models.strategies import (
    STRATEGIES,
    MultiOutput,
    StageConfig,
    StrategyConfig,
    register_strategy,
    registered,
)
from landmark_tl.models.strategies.base import OneStageBothTasks
from tests.conftest import TINY_OVERRIDES


@dataclass
class ToyConfig(StrategyConfig):
    name: str = "toy"
    temperature: float = 1.0  # an option: logits are divided by it
    # without a YAML, the dataclass carries the numbers of the stage it runs
    stages: dict[str, StageConfig] = field(
        default_factory=lambda: {"joint": StageConfig(epochs=1, lr=1e-2)}
    )


@register_strategy(ToyConfig)
class Toy(OneStageBothTasks):
    """Linear heads on the features, tempered."""

    def __init__(
        self,
        backbone,
        hierarchy,
        stages: Mapping[str, StageConfig],
        *,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(backbone, hierarchy, stages, hidden=(), dropout=0.0)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: must be > 0")
        self.temperature = temperature

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: logits / self.temperature for task, logits in self.net(features).items()}


@pytest.mark.slow
def test_a_strategy_registered_in_a_test_file_trains_by_name(tiny_tree, tmp_path):
    assert STRATEGIES["toy"] is Toy and registered("toy").config is ToyConfig
    config = landmark_tl.compose(
        [
            *TINY_OVERRIDES,
            f"data.root={tiny_tree}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "strategy=toy",
            "strategy.temperature=2.5",
        ]
    )
    assert isinstance(config.strategy, ToyConfig) and config.strategy.temperature == 2.5
    assert config.strategy.stages["joint"].epochs == 2  # TINY_OVERRIDES reach its stages
    metrics = landmark_tl.train(config, tmp_path / "run")
    assert metrics["strategy"] == "toy" and metrics["stages"][0]["epochs"] == 2
    assert set(metrics["test"]) == {"category", "landmark"}
    run = landmark_tl.load_run(tmp_path / "run")  # the saved config names it again
    assert isinstance(run.model, Toy) and run.model.temperature == 2.5


def test_options_are_typed_and_belong_to_their_strategy():
    with pytest.raises(UsageError, match="temperature"):
        landmark_tl.compose(["strategy=toy", "strategy.temperature=warm"])
    with pytest.raises(UsageError, match="Key 'temperature' not in 'MultiOutputConfig'"):
        landmark_tl.compose(["strategy.temperature=2"])
    with pytest.raises(ConfigError, match=r"strategy=nope: no such strategy; registered: \["):
        registered("nope")


def test_a_name_registers_one_class():
    with pytest.raises(ValueError, match="'multi_output' is already registered"):
        register_strategy(landmark_tl.models.strategies.multi_output.MultiOutputConfig)(Toy)
    assert STRATEGIES["multi_output"] is MultiOutput


def test_the_config_layer_names_keys_where_the_strategy_names_arguments(tiny_config):
    from landmark_tl.core.hierarchy import LabelHierarchy
    from landmark_tl.training.build import build_strategy

    config = tiny_config("strategy=head_swap", "strategy.first=species")
    hierarchy = LabelHierarchy.from_pairs([("Gothic", "A"), ("Pyramids", "B")])
    backbone = create_backbone(weights="none", input_size=(3, 64, 64))
    with pytest.raises(ConfigError, match=r"^strategy=head_swap: strategy\.first='species'"):
        build_strategy(config, backbone, hierarchy)
