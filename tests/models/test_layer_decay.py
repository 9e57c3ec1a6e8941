"""Layer-wise learning-rate decay in real fine-tuning runs of every strategy."""

from __future__ import annotations

import csv

import pytest

from landmark_tl.training.run import train

# tf_efficientnet_lite0 in timm's fine grouping (group_matcher(coarse=False)): the stem,
# then its 16 blocks one by one (the last conv joins the last block): 17 layers, the last
# at the backbone's full rate, each one nearer the input × DECAY.
LAYERS = 17
LR, RATIO, DECAY = 0.01, 0.5, 0.8


def logged_rates(run_dir, stage: str) -> set[float]:
    """The learning rate of every optimiser group at the first step of ``stage``."""
    with open(run_dir / "logs" / stage / "metrics.csv") as f:
        first = next(row for row in csv.DictReader(f) if any(k.startswith("lr-") for k in row))
    return {round(float(v), 12) for k, v in first.items() if k.startswith("lr-") and v}


@pytest.mark.parametrize(
    ("strategy", "stage"),
    [
        ("multi_output", "joint"),
        ("head_swap", "landmark"),
        ("feature_chain", "landmark"),
        ("hierarchical", "landmark"),
    ],
)
def test_every_strategy_fine_tunes_with_layer_decay_at_the_hand_computed_rates(
    tiny_config, tmp_path, strategy, stage
):
    stages = ("joint",) if strategy == "multi_output" else ("landmark", "category")
    if strategy == "hierarchical":
        stages = ("landmark",)
    config = tiny_config(
        f"strategy={strategy}",
        *(f"strategy.stages.{s}.epochs=1" for s in stages),
        f"strategy.lr={LR}",
        "backbone.freeze=none",
        f"backbone.lr_ratio={RATIO}",
        "optim.optimizer=adamw",
        f"optim.layer_decay={DECAY}",
        "callbacks=[lr_monitor]",
    )
    train(config, tmp_path / "run")
    backbone = {round(LR * RATIO * DECAY**k, 12) for k in range(LAYERS)}
    assert logged_rates(tmp_path / "run", stage) == {LR} | backbone  # heads at LR
    if "category" in stages:  # stage 2 trains its heads only, the backbone stays out
        assert logged_rates(tmp_path / "run", "category") == {LR}
