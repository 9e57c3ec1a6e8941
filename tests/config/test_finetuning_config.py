"""Fine-tuning keys that cannot work together are refused at start, naming keys and fix."""

from __future__ import annotations

import pytest

from landmark_tl.config.schema import ConfigError, validate_config
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optim.layer_decay=0.75"],  # the default backbone.freeze=all
            r"optim.layer_decay=0.75 .* backbone.freeze=all trains none of it .*"
            r"set backbone.freeze=none \(or schedule\), or optim.layer_decay=null",
        ),
        (
            ["optim.layer_decay=0.75", "features.cache=true"],
            r"optim.layer_decay=0.75 .* \(its features may be cached\)",
        ),
        (
            ["backbone.freeze=none", "backbone.unfreeze_last_blocks=2"],
            r"backbone.unfreeze_last_blocks=2 .* but backbone.freeze=none: set "
            r"backbone.freeze=schedule, or backbone.unfreeze_last_blocks=null",
        ),
        (
            ["backbone.unfreeze_last_blocks=2"],
            r"backbone.unfreeze_last_blocks=2 .* but backbone.freeze=all",
        ),
        (
            ["backbone.freeze_bn=true"],
            r"backbone.freeze_bn=true .* set backbone.freeze=none \(or schedule\), or "
            r"backbone.freeze_bn=false",
        ),
        (
            ["backbone.freeze=schedule", "backbone.unfreeze_at_epoch=40"],
            r"backbone.unfreeze_at_epoch=40: no stage lasts longer \(strategy.stages.\*.epochs "
            r"at most 40\)",
        ),
        (
            ["backbone.freeze=schedule", "backbone.unfreeze_at_epoch=1", "optim.scheduler=plateau"],
            r"optim.scheduler=plateau .* backbone.freeze=schedule adds",
        ),
        (
            ["+approach=linear_probe", "backbone.freeze=none"],
            r"strategy=linear_probe fits on frozen features, but backbone.freeze=none",
        ),
        (
            ["+approach=hierarchical_probe", "backbone.freeze=schedule"],
            r"strategy=hierarchical_probe fits on frozen features",
        ),
        (
            ["backbone.freeze=none", "features.cache=true"],
            r"features.cache=true needs a frozen backbone",
        ),
        (
            ["backbone.freeze=all", "recipe=timm", "features.cache=true", "optim.mixup=0.2"],
            r"optim.mixup/optim.cutmix mix images, but this run trains on cached features",
        ),
    ],
)
def test_a_combination_that_cannot_work_is_refused_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(*overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["backbone.freeze=none", "optim.layer_decay=0.75", "recipe=timm"],
        ["backbone.freeze=schedule", "backbone.unfreeze_last_blocks=2", "optim.layer_decay=0.75"],
        ["backbone.freeze=schedule", "backbone.unfreeze_at_epoch=3", "recipe=timm"],
        ["+approach=finetune"],
        ["experiment=finetune_recipe"],
        ["experiment=freeze_study"],
    ],
)
def test_combinations_that_work_pass(overrides):
    validate_config(compose_config(*overrides))


def test_the_finetune_approach_fine_tunes_multi_output_under_its_own_name():
    config = compose_config("+approach=finetune")
    assert config.strategy.approach == "finetune"  # its own row in reports
    assert (config.strategy.name, config.backbone.freeze.value) == ("multi_output", "none")
    assert (config.backbone.lr_ratio, config.backbone.freeze_bn) == (0.1, True)
    assert compose_config("+approach=multi_output").strategy.approach == "multi_output"
