"""Which runs of a multirun can train their heads together, and in which groups.

Runs go in one group when they read the same features (data, split, backbone, views)
and their heads can step together: same strategy and stage structure, same head layers,
same batch size and recipe. Inside a group each member keeps its own seed, learning
rates, weight decay, patience, epochs, dropout and loss weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from landmark_tl.config.lightning import Monitor
from landmark_tl.config.schema import TrainConfig, default_logger
from landmark_tl.core.errors import ConfigError
from landmark_tl.data.sampling import Sampler
from landmark_tl.data.transforms import Augment
from landmark_tl.evaluation.registry import metric_names
from landmark_tl.models.backbone import FreezePolicy, WeightsSource
from landmark_tl.models.optim import OptimizerName
from landmark_tl.models.strategies import (
    STRATEGIES,
    FeatureChain,
    HeadSwap,
    Hierarchical,
    HierarchicalProbe,
    LinearProbe,
    MultiOutput,
)
from landmark_tl.runs.fingerprint import config_items

# Strategies whose heads are plain functions of the cached features (the probes fit in
# closed form, once per group: see landmark_tl.sweep.group; a strategy not listed here
# runs as usual).
BATCHED_STRATEGIES = (
    MultiOutput,
    HeadSwap,
    FeatureChain,
    Hierarchical,
    LinearProbe,
    HierarchicalProbe,
)

# Per-member values: everything else must agree across a group.
MEMBER_KEYS = ("seed", "strategy.lr", "head.dropout")
MEMBER_PREFIXES = ("strategy.loss_weights.",)
STAGE_MEMBER_FIELDS = ("lr", "weight_decay", "patience", "epochs")


class GroupError(ConfigError):
    """Runs put in one head batch that disagree on something that cannot vary."""


def unbatchable_reason(config: TrainConfig) -> str | None:
    """Why ``config``'s run cannot join a head batch (it then runs as usual), or None."""
    strategy = STRATEGIES.get(config.strategy.name)
    optim = config.optim
    checks = [
        (
            strategy not in BATCHED_STRATEGIES,  # exactly these: a subclass may fit otherwise
            f"strategy={config.strategy.name} is not a batched head strategy",
        ),
        (
            config.backbone.freeze is not FreezePolicy.all
            or not config.features.enabled(backbone_frozen=True),
            "the backbone trains or features are not cached",
        ),
        (
            optim.optimizer not in (OptimizerName.adam, OptimizerName.adamw),
            f"optim.optimizer={optim.optimizer.value}",
        ),
        (optim.scheduled, "a learning-rate schedule or warmup"),
        (optim.mixes, "mixup/cutmix"),
        (bool(config.callbacks), "extra callbacks"),
        (config.logger != default_logger(), "trackers beside the CSV log, or its settings"),
        (bool(config.trainer.extra), "extra Trainer arguments"),
        (
            config.strategy.monitor not in batched_monitors(),
            f"strategy.monitor={config.strategy.monitor}",
        ),
        (config.data.sampler is not Sampler.none, f"data.sampler={config.data.sampler.value}"),
        (config.trainer.num_nodes != 1 or config.trainer.strategy != "auto", "data parallel"),
    ]
    reasons = [why for failed, why in checks if failed]
    return "; ".join(reasons) or None


def batched_monitors() -> tuple[str, ...]:
    """The values every stage logs, so the vectorised loop can keep and stop on them."""
    return ("val/loss", *(f"val/{name}" for name in metric_names()))


def group_monitor(config: TrainConfig) -> Monitor:
    """The value a group keeps each member's best weights by and stops it early on."""
    return Monitor.resolve(config.strategy.monitor, config.strategy.monitor_mode)


def _is_member_key(key: str) -> bool:
    if key in MEMBER_KEYS or key.startswith(MEMBER_PREFIXES):
        return True
    parts = key.split(".")
    return (
        len(parts) == 4 and parts[:2] == ["strategy", "stages"] and parts[3] in STAGE_MEMBER_FIELDS
    )


def shared_items(config: TrainConfig) -> dict[str, Any]:
    """The flat config keys every member of a group shares (cosmetic keys left out).

    The seed varies freely except where it changes the features: a randomly initialised
    backbone (``backbone.weights=none``) and random augmentation (it picks the cached views).
    """
    items = {k: v for k, v in config_items(config).items() if not _is_member_key(k)}
    if config.data.augment is not Augment.none or config.backbone.weights is WeightsSource.none:
        items["seed"] = config.seed
    return items


def group_key(config: TrainConfig) -> str:
    """A string equal for two configs exactly when their runs can share a head batch."""
    return repr(sorted(shared_items(config).items()))


def check_group(configs: Sequence[TrainConfig]) -> None:
    """Refuse a group whose members disagree on a shared key, naming the first such key."""
    if not configs:
        return
    first = shared_items(configs[0])
    for index, config in enumerate(configs[1:], start=1):
        items = shared_items(config)
        for key in sorted(set(first) | set(items)):
            if first.get(key) != items.get(key):
                raise GroupError(
                    f"a head batch needs its members to agree on {key}: member 0 has "
                    f"{first.get(key)!r}, member {index} has {items.get(key)!r}; run them in "
                    "separate groups (the heads launcher groups by these keys)"
                )


def group_jobs(configs: Sequence[TrainConfig]) -> tuple[list[list[int]], list[int]]:
    """Indices of ``configs`` grouped into head batches (in first-seen order), and those
    that run as usual."""
    groups: dict[str, list[int]] = {}
    alone = []
    for index, config in enumerate(configs):
        if unbatchable_reason(config) is not None:
            alone.append(index)
        else:
            groups.setdefault(group_key(config), []).append(index)
    return list(groups.values()), alone
