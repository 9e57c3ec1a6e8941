"""Unfreeze schedules for the backbone, as a Lightning finetuning callback.

``backbone.freeze=schedule`` trains the heads with the backbone frozen for
``unfreeze_at_epoch`` epochs, then unfreezes the whole backbone or its last K blocks
(timm's coarse grouping: stem, stages; :func:`backbone_blocks`), which
join the optimiser at ``lr_ratio`` × the heads' learning rate, in the groups of
:func:`~landmark_tl.models.optim.backbone_groups` (no weight decay on norms and biases;
``optim.layer_decay`` applies), and join the stage's timm schedule.
Lightning's :class:`BaseFinetuning` keeps that group in checkpoints, so a resumed fit goes
on with the same optimiser whether it was saved before or after the unfreeze.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from timm.models import group_parameters
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer

from landmark_tl.models.optim import backbone_groups


@dataclass(frozen=True)
class UnfreezeSchedule:
    """When and how much of the backbone to unfreeze."""

    unfreeze_at_epoch: int = 5
    last_blocks: int | None = None  # None: the whole backbone
    lr_ratio: float = 0.1  # backbone learning rate / heads' learning rate

    def __post_init__(self) -> None:
        if self.unfreeze_at_epoch < 0:
            raise ValueError("backbone.unfreeze_at_epoch must be >= 0")
        if self.last_blocks is not None and self.last_blocks < 1:
            raise ValueError("backbone.unfreeze_last_blocks must be >= 1 or null (all)")
        if self.lr_ratio <= 0:
            raise ValueError("backbone.lr_ratio must be > 0")


def backbone_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in forward order, each one module.

    A block is a group of timm's coarse grouping of the model (``group_matcher(coarse=True)``
    read by ``timm.models.group_parameters``; timm's layer decay uses the fine one): the
    stem, then each stage (EfficientNet ``blocks.i``, ResNet ``layer i``, ConvNeXt
    ``stages.i``) or transformer block (ViT ``blocks.i``), the final conv or norm joined to
    the last as timm joins it. A block is given as an ``nn.ModuleList`` of the largest
    submodules whose parameters all lie in it. Models without ``group_matcher`` fall back
    to :func:`child_units`.
    """
    matcher = getattr(model, "group_matcher", None)
    try:
        spec = matcher(coarse=True) if callable(matcher) else None
    except NotImplementedError:
        spec = None
    if spec is None:
        return child_units(model)
    block_of = group_parameters(model, spec, reverse=True)  # parameter name -> block
    members: dict[int, list[nn.Module]] = defaultdict(list)
    _largest_within_one_block(model, "", block_of, members)
    return [nn.ModuleList(members[block]) for block in sorted(members)]


def _largest_within_one_block(
    module: nn.Module, prefix: str, block_of: dict[str, int], members: dict[int, list[nn.Module]]
) -> None:
    for name, child in module.named_children():
        path = prefix + name
        blocks = {block_of[f"{path}.{key}"] for key, _ in child.named_parameters()}
        if len(blocks) == 1:
            members[blocks.pop()].append(child)
        elif blocks:
            _largest_within_one_block(child, path + ".", block_of, members)


def child_units(model: nn.Module) -> list[nn.Module]:
    """The hand grouping for models without timm's ``group_matcher``: top-level children,
    with ``Sequential``/``ModuleList`` containers expanded one level; units without
    parameters are skipped."""
    units: list[nn.Module] = []
    for child in model.children():
        parts = list(child) if isinstance(child, nn.Sequential | nn.ModuleList) else [child]
        units += [p for p in parts if any(True for _ in p.parameters())]
    return units


def blocks_to_unfreeze(model: nn.Module, last_blocks: int | None) -> list[nn.Module]:
    """The last ``last_blocks`` blocks; the whole model for None or at least as many as it
    has (so that parameters a spanning module holds itself, e.g. ViT's ``cls_token`` and
    ``pos_embed``, join too)."""
    blocks = backbone_blocks(model)
    return [model] if last_blocks is None or last_blocks >= len(blocks) else blocks[-last_blocks:]


class ScheduledUnfreeze(BaseFinetuning):
    """Freeze ``pl_module.backbone.model`` before training, unfreeze it on schedule."""

    def __init__(self, schedule: UnfreezeSchedule, train_bn: bool = True) -> None:
        super().__init__()
        self.schedule = schedule
        self.train_bn = train_bn
        self.unfrozen = False

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        pl_module.backbone.model.requires_grad_(False)

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if self.unfrozen or epoch < self.schedule.unfreeze_at_epoch:
            return
        modules = blocks_to_unfreeze(pl_module.backbone.model, self.schedule.last_blocks)
        if self._group_restored(optimizer, modules):
            self.make_trainable(modules)  # a resume after the unfreeze: group came back
        else:
            self.make_trainable(modules)
            self._add_groups(pl_module, modules, optimizer)
        self.unfrozen = True
        pl_module.backbone.train(pl_module.training)  # unfrozen blocks leave eval mode now

    def _add_groups(
        self, pl_module: L.LightningModule, modules: list[nn.Module], optimizer: Optimizer
    ) -> None:
        """The unfrozen parameters (less batch-norm ones without ``train_bn``) as new groups
        at ``lr_ratio`` × the heads' rate; a timm schedule scales them from now on as it
        scales the heads (its base values grow by theirs)."""
        allowed = {id(p) for p in self.filter_params(modules, train_bn=self.train_bn)}
        allowed -= {id(p) for group in optimizer.param_groups for p in group["params"]}
        heads = optimizer.param_groups[0]
        base = heads.get("initial_lr", heads["lr"])  # timm schedulers keep the base here
        now = heads["lr"] / base if base else 1.0  # where the schedule stands
        stage = pl_module.stages[pl_module.stage]
        schedulers = [
            config.scheduler
            for config in pl_module.trainer.lr_scheduler_configs
            if isinstance(config.scheduler, Scheduler) and config.scheduler.optimizer is optimizer
        ]
        model = pl_module.backbone.model
        ratio = self.schedule.lr_ratio
        for group in backbone_groups(model, base, stage.weight_decay, pl_module.recipe, ratio):
            group["params"] = [p for p in group["params"] if id(p) in allowed]
            if not group["params"]:
                continue
            group["initial_lr"], group["lr"] = group["lr"], group["lr"] * now
            optimizer.add_param_group(group)
            for scheduler in schedulers:
                scheduler.base_values.append(group["initial_lr"])

    @staticmethod
    def _group_restored(optimizer: Optimizer, modules: list[nn.Module]) -> bool:
        ids = {id(p) for m in modules for p in m.parameters()}
        return any(id(p) in ids for group in optimizer.param_groups for p in group["params"])
