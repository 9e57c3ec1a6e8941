"""The optimisation recipe: optimisers, parameter groups, schedules, and their checks."""

from __future__ import annotations

import csv

import pytest
import timm
import torch
from torch import nn

from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.models.optim import (
    OptimizerName,
    Recipe,
    SchedulerName,
    balanced_class_weights,
    build_optimizer,
    build_scheduler,
)
from landmark_tl.training.run import train
from tests.conftest import compose_config


class Net(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def test_the_default_recipe_is_the_studys_adam_with_a_constant_rate():
    net = Net(nn.Linear(4, 8))
    optimizer = build_optimizer(net, net.backbone, 0.003, 0.0, Recipe())
    assert type(optimizer) is torch.optim.Adam
    assert {group["lr"] for group in optimizer.param_groups} == {0.003}
    assert build_scheduler(optimizer, Recipe(), epochs=10, steps_per_epoch=5) is None


def test_heads_default_to_label_smoothing_and_the_study_protocol_keeps_plain_cross_entropy():
    assert compose_config().optim.label_smoothing == 0.1  # optim=heads
    for overrides in (["experiment=study_protocol"], ["recipe=study"], ["optim=study"]):
        recipe = compose_config(*overrides).optim
        assert (recipe.label_smoothing, recipe.scheduler.value) == (0.0, "none")


def test_adamw_leaves_norms_and_biases_undecayed():
    net = Net(nn.Linear(4, 8))
    net.backbone.requires_grad_(False)  # frozen parameters stay out
    optimizer = build_optimizer(net, net.backbone, 0.01, 0.05, Recipe(OptimizerName.adamw))
    assert type(optimizer) is torch.optim.AdamW
    decay = {
        id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]
    }
    kept = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decay == {id(net.head[0].weight), id(net.head[2].weight)}
    assert kept == {id(net.head[0].bias), id(net.head[1].weight), id(net.head[1].bias)} | {
        id(net.head[2].bias)
    }


def test_layer_decay_lowers_the_rate_toward_the_input_of_a_timm_backbone():
    backbone = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    net = Net(backbone)
    recipe = Recipe(OptimizerName.adamw, layer_decay=0.5)
    optimizer = build_optimizer(net, backbone, 0.01, 0.05, recipe)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(net.head[2].weight)] == pytest.approx(0.01)
    stem, middle, last = (
        lr_of[id(module.weight)]
        for module in (backbone.conv1[0], backbone.layer2[0].conv1, backbone.layer4[0].conv1)
    )
    assert stem < middle < last == pytest.approx(0.01)  # timm: the top layer keeps the rate
    assert len(lr_of) == sum(1 for _ in net.parameters())  # every parameter, once


def test_cosine_schedule_warms_up_linearly_per_step_then_decays():
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    recipe = Recipe(
        OptimizerName.adamw, scheduler=SchedulerName.cosine, warmup_epochs=1, warmup_lr=0.0
    )
    scheduler = build_scheduler(optimizer, recipe, epochs=4, steps_per_epoch=10)
    rates = []
    for step in range(40):
        scheduler.step_update(num_updates=step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.0) and rates[5] == pytest.approx(0.05)
    assert max(rates) == pytest.approx(0.1, rel=0.02) and rates.index(max(rates)) == 10
    assert rates[-1] < 0.005 and all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))


def test_a_fractional_warmup_lasts_that_share_of_an_epoch_in_steps():
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    recipe = Recipe(scheduler=SchedulerName.cosine, warmup_epochs=0.25, warmup_lr=0.0)
    scheduler = build_scheduler(optimizer, recipe, epochs=2, steps_per_epoch=16)
    rates = []
    for step in range(32):
        scheduler.step_update(num_updates=step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])  # 4 warmup steps
    assert all(a >= b for a, b in zip(rates[4:], rates[5:], strict=False))


@pytest.mark.slow
def test_the_timm_recipe_trains_with_warmup_and_cosine_per_step(tiny_config, tmp_path):
    config = tiny_config(
        "optim=timm",
        "strategy.stages.joint.epochs=3",
        "strategy.stages.joint.lr=0.01",
        "callbacks=[lr_monitor]",
    )
    train(config, tmp_path / "run")
    with open(tmp_path / "run" / "logs" / "joint" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    (column,) = [c for c in rows[0] if c.startswith("lr-AdamW")][:1]
    rates = [float(r[column]) for r in rows if r[column]]
    assert len(rates) == 6  # 12 training images, batch 8: 2 steps per epoch
    # one epoch (2 steps) of linear warmup from 1e-6, then cosine from the full rate
    assert rates[0] == pytest.approx(1e-6) and rates[1] == pytest.approx(0.005, rel=0.01)
    assert rates[2] == pytest.approx(0.01) and rates[2] > rates[3] > rates[4] > rates[5]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.label_smoothing=1.0"], r"optim.label_smoothing=1.0: must be in \[0, 1\)"),
        (["optim.label_smoothing=-0.1"], r"optim.label_smoothing=-0.1"),
        (
            ["optim.warmup_epochs=5", "strategy.stages.joint.epochs=5"],
            "optim.warmup_epochs=5.0: not shorter than strategy.stages.joint.epochs=5",
        ),
        (["optim.layer_decay=1.5"], r"optim.layer_decay=1.5: must be in \(0, 1\]"),
    ],
)
def test_bad_recipe_values_fail_at_start_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(*overrides))


def test_balanced_class_weights_follow_the_training_counts():
    weights = balanced_class_weights([0, 0, 0, 1], num_classes=3)
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
