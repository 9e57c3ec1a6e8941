"""The LightningModule every strategy builds on: stage switching, task losses, metrics, optimiser.

A strategy trains the two tasks (``category``, ``landmark``) in one or more *stages*; each
stage is its own ``Trainer.fit`` and names the tasks it trains and tests. Subclasses give
the stage order, the tasks of each stage (:meth:`stage_tasks`), what trains in a stage
(:meth:`begin_stage`) and how logits are made (:meth:`task_logits`). The values that
describe a stage (``StageConfig``, ``LossWeights``, ``TestOutputs``) are in ``stages.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchmetrics import MeanMetric

from landmark_tl.core.hierarchy import TASKS, LabelHierarchy
from landmark_tl.data.splits import SPLITS
from landmark_tl.evaluation.metrics import task_metrics
from landmark_tl.evaluation.registry import metric_names
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.finetuning import ScheduledUnfreeze
from landmark_tl.models.heads import MLP
from landmark_tl.models.optim import (
    PLATEAU_MONITOR,
    Recipe,
    SchedulerName,
    TwoLevelMixup,
    build_optimizer,
    build_scheduler,
)
from landmark_tl.models.strategies.stages import (
    STAGE_NAMES,
    StageConfig,
    TestOutputs,
    check_loss_weights,
    other_task,
)

AVERAGED_SPLITS = ("val_ema", "test_ema")  # scores of an average of the weights (WeightEMA)


class TwoLevelStrategy(L.LightningModule):
    """Backbone + strategy-specific heads, trained stage by stage."""

    recipe: Recipe = Recipe()
    """Optimiser, schedule and label smoothing of every stage (set by the builder)."""
    class_weights: Mapping[str, torch.Tensor] | None = None
    """Per task, the training loss weight of each class (``optim.class_balance``)."""

    takes_head: bool = True
    """Whether it takes the ``head.*`` options (hidden widths, dropout)."""
    trains_backbone: bool = True
    """Whether it can fine-tune the backbone (False: it fits on frozen features only)."""

    intended_notices: tuple[str, ...] = (r"Found \d+ module\(s\) in eval mode",)
    """Lightning's warnings (regexes) about what this strategy does on purpose, not shown
    while it fits: modules fixed in a stage stay in eval mode (see :meth:`train`)."""

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        stage_names: Sequence[str],
    ) -> None:
        super().__init__()
        unknown = sorted(set(stages) - set(STAGE_NAMES))
        missing = [name for name in stage_names if name not in stages]
        unset = [
            f"{name}.{key}"
            for name in stage_names
            if name in stages
            for key in ("epochs", "lr")
            if getattr(stages[name], key) is None
        ]
        if unset:
            raise ValueError(
                f"stages: {type(self).__name__} needs {unset} (each strategy's YAML in "
                "landmark_tl/conf/strategy sets them; landmark_tl.compose() reads it)"
            )
        if unknown or missing:
            raise ValueError(
                f"stages: {type(self).__name__} runs stages {list(stage_names)}; "
                f"missing {missing}, unknown {unknown} (stage names are {list(STAGE_NAMES)})"
            )
        self.backbone = backbone
        self.hierarchy = hierarchy
        self.stage_names = tuple(stage_names)
        self.stages = {name: stages[name] for name in self.stage_names}
        self.num_classes = {
            "category": hierarchy.num_categories,
            "landmark": hierarchy.num_landmarks,
        }
        splits = (*SPLITS, *AVERAGED_SPLITS)
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{task}": task_metrics(self.num_classes[task])
                for split in splits
                for task in TASKS
            }
        )
        self.losses = nn.ModuleDict(
            {f"{split}_{name}": MeanMetric() for split in splits for name in ("loss", *TASKS)}
        )
        self.stage = self.stage_names[0]
        self.test_outputs = TestOutputs()  # of the raw weights
        self.test_outputs_ema = TestOutputs()  # of the averaged weights (when a WeightEMA ran)
        self._test_batches: dict[str, list[dict[str, tuple[torch.Tensor, ...]]]] = {}
        self._evaluated: set[str] = set()  # splits with batches since their last log

    # --- what subclasses define -------------------------------------------------------
    def stage_tasks(self, stage: str) -> tuple[str, ...]:
        """Tasks trained, validated and tested in ``stage``."""
        raise NotImplementedError

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of (at least) the current stage's tasks from backbone features."""
        raise NotImplementedError

    def loss_weight(self, task: str) -> float:
        """Weight of ``task``'s cross-entropy in the stage loss."""
        return 1.0

    def decode(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predicted class of each task: the argmax of its logits."""
        return {task: value.argmax(-1) for task, value in logits.items()}

    def trainable_in_stage(self, stage: str) -> list[nn.Module]:
        """Modules whose parameters train in ``stage`` (the backbone follows its policy)."""
        raise NotImplementedError

    def check_split_sizes(self, sizes: Mapping[str, int]) -> None:
        """Refuse (ConfigError naming the key) options the split sizes cannot serve, before
        anything trains; ``sizes`` holds the images of each split. Nothing by default."""

    def kept_in_eval(self, stage: str) -> list[nn.Module]:
        """Modules that act as fixed functions in ``stage`` (no dropout, no BN updates)."""
        return []

    # --- shared behaviour ---------------------------------------------------------------
    def begin_stage(self, stage: str) -> None:
        """Make ``stage`` current: only its modules (and an unfrozen backbone) train."""
        if stage not in self.stages:
            raise ValueError(f"unknown stage '{stage}'; stages are {list(self.stage_names)}")
        self.stage = stage
        trainable = self.trainable_in_stage(stage)
        for name, child in self.named_children():
            if name not in ("backbone", "metrics"):
                child.requires_grad_(any(child is m for m in trainable))
        for module in trainable:
            if module is not self.backbone:
                module.requires_grad_(True)
        scheduled = self.backbone.schedule is not None  # ScheduledUnfreeze decides
        self.backbone.model.requires_grad_(self._backbone_trains(stage) and not scheduled)
        self.train(self.training)

    def configure_callbacks(self) -> list[L.Callback]:
        """The backbone's unfreeze schedule, in the stages where the backbone trains."""
        schedule = self.backbone.schedule
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if schedule is None or not fitting or not self._backbone_trains(self.stage):
            return []
        return [ScheduledUnfreeze(schedule, train_bn=not self.backbone.freeze_bn)]

    def _backbone_trains(self, stage: str) -> bool:
        trainable = self.trainable_in_stage(stage)
        return not self.backbone.frozen and any(m is self.backbone for m in trainable)

    def train(self, mode: bool = True) -> TwoLevelStrategy:
        """Like ``nn.Module.train``; modules that are fixed in this stage stay in eval."""
        super().train(mode)
        fixed = self.kept_in_eval(self.stage)
        if not self._backbone_trains(self.stage):
            fixed.append(self.backbone)
        for module in fixed:
            module.eval()
        return self

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.stage_tasks(self.stage)

    def logged_keys(self, stage: str, split: str = "val") -> list[str]:
        """The values ``stage`` logs for ``split`` each epoch (what a monitor may name)."""
        tasks = self.stage_tasks(stage)
        names = metric_names()
        keys = ["loss", *names, *(f"{t}_{n}" for t in tasks for n in ("loss", *names))]
        return [f"{split}/{key}" for key in keys]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of an image batch; (N, D) precomputed features pass through."""
        return x if x.ndim == 2 else self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.task_logits(self.encode(x))

    def averaged_weights(self, stage: str) -> dict[str, torch.Tensor]:
        """Parameters and floating buffers of what trains in ``stage``, by name: what an
        average of the weights (:class:`~landmark_tl.models.ema.WeightEMA`) covers."""
        trained = [
            m
            for m in self.trainable_in_stage(stage)
            if m is not self.backbone or self._backbone_trains(stage)
        ]
        ids = {id(t) for m in trained for t in chain(m.parameters(), m.buffers())}
        return {
            name: t
            for name, t in chain(self.named_parameters(), self.named_buffers())
            if id(t) in ids and t.is_floating_point()
        }

    @torch.no_grad()
    def evaluate_with(
        self, weights: Mapping[str, torch.Tensor], batch: tuple[torch.Tensor, ...], split: str
    ) -> None:
        """Score ``batch`` for ``split`` (val_ema, test_ema) with ``weights`` in place of the
        module's own of the same names (the others are the module's)."""
        self._step(batch, split, weights)

    def _step(
        self,
        batch: tuple[torch.Tensor, ...],
        split: str,
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Loss of the stage's tasks; metrics accumulate here and are logged per epoch."""
        x, category, landmark = batch
        targets = {"category": category, "landmark": landmark}
        mixed = None
        if split == "train" and self.recipe.mixes:
            x, mixed = self._mixup(x, landmark)
        if weights is None:
            logits = self(x)
        else:
            logits = torch.func.functional_call(self, dict(weights), (x,), strict=False)
        preds = self.decode(logits)
        loss = torch.zeros((), device=x.device)
        for task in self.tasks:
            if mixed is None:
                task_loss = self._task_loss(task, logits[task], targets[task], split)
            else:  # soft targets (metrics of mixed batches still count the hard labels)
                task_loss = SoftTargetCrossEntropy()(logits[task], mixed[task])
            loss = loss + self.loss_weight(task) * task_loss
            self.metrics[f"{split}_{task}"].update(preds[task], targets[task])
            self.losses[f"{split}_{task}"].update(task_loss.detach(), len(x))
        self.losses[f"{split}_loss"].update(loss.detach(), len(x))
        self._evaluated.add(split)
        if split.startswith("test"):
            self._test_batches.setdefault(split, []).append(
                {t: (logits[t].detach(), preds[t], targets[t]) for t in self.tasks}
            )
        return loss

    def _mixup(
        self, x: torch.Tensor, landmark: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if getattr(self, "_mixer", None) is None:
            self._mixer = TwoLevelMixup(self.recipe, self.hierarchy.parent_tensor())
        return self._mixer(x, landmark)

    def _task_loss(
        self, task: str, logits: torch.Tensor, targets: torch.Tensor, split: str
    ) -> torch.Tensor:
        """Cross-entropy; in training with the recipe's label smoothing and class weights
        (validation and test losses stay plain, so they compare across recipes)."""
        if split != "train":
            return F.cross_entropy(logits, targets)
        weight = None if self.class_weights is None else self.class_weights[task].to(logits)
        return F.cross_entropy(
            logits, targets, weight=weight, label_smoothing=self.recipe.label_smoothing
        )

    def _log_epoch(self, split: str) -> None:
        """Log ``split``'s epoch values once (``<split>/loss``, ``<split>/<task>_f1`` ...)."""
        values = {f"{split}/loss": self.losses[f"{split}_loss"].compute()}
        for task in self.tasks:
            values[f"{split}/{task}_loss"] = self.losses[f"{split}_{task}"].compute()
            for name, value in self.metrics[f"{split}_{task}"].compute().items():
                values[f"{split}/{task}_{name}"] = value
        for name in metric_names():  # the stage's mean score, what any stage can be judged by
            values[f"{split}/{name}"] = torch.stack(
                [values[f"{split}/{task}_{name}"] for task in self.tasks]
            ).mean()
        self.log_dict(values, prog_bar=split == "val", sync_dist=True)
        for task in TASKS:
            self.metrics[f"{split}_{task}"].reset()
        for name in ("loss", *TASKS):
            self.losses[f"{split}_{name}"].reset()
        self._evaluated.discard(split)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        for split in ("val", "val_ema"):
            if split in self._evaluated:
                self._log_epoch(split)

    def on_test_epoch_start(self) -> None:
        self._test_batches = {}
        self.test_outputs_ema = TestOutputs()

    def on_test_epoch_end(self) -> None:
        """Log the test scores; collect the test predictions of the stage's tasks, from
        every process under data parallelism, in the test set's order."""
        for split, outputs in (("test", self.test_outputs), ("test_ema", self.test_outputs_ema)):
            if split not in self._evaluated:
                continue
            self._log_epoch(split)
            batches = self._test_batches.pop(split)
            for task in self.tasks:
                logits, preds, targets = (
                    self._gather_in_order(torch.cat([b[task][i] for b in batches]))
                    for i in range(3)
                )
                outputs.probs[task] = logits.float().softmax(-1)
                outputs.preds[task] = preds
                outputs.targets[task] = targets

    def _gather_in_order(self, local: torch.Tensor) -> torch.Tensor:
        """Undo a non-shuffling DistributedSampler: rank r held items r, r + W, r + 2W ...
        of the test set padded to a multiple of W; interleave them back and drop the pad."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return local.cpu()
        gathered = self.all_gather(local)  # (W, n_local, ...)
        interleaved = gathered.transpose(0, 1).reshape(-1, *local.shape[1:])
        total = len(self.trainer.datamodule.datasets["test"])
        return interleaved[:total].cpu()

    def configure_optimizers(self) -> dict[str, Any]:
        """The recipe's optimiser (and schedule) for the current stage's parameters."""
        if not any(p.requires_grad for p in self.parameters()):
            raise RuntimeError(f"stage '{self.stage}' has no trainable parameters")
        stage = self.stages[self.stage]
        optimizer = build_optimizer(
            self,
            self.backbone.model,
            stage.lr,
            stage.weight_decay,
            self.recipe,
            self.backbone.lr_ratio,
        )
        if not self.recipe.scheduled:
            return {"optimizer": optimizer}
        steps = int(self.trainer.estimated_stepping_batches) // max(1, stage.epochs)
        scheduler = build_scheduler(optimizer, self.recipe, stage.epochs, steps)
        per_epoch = self.recipe.scheduler is SchedulerName.plateau
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": "epoch" if per_epoch else "step",
                "monitor": PLATEAU_MONITOR,
            },
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm schedulers: per optimiser step by the step count, or per epoch."""
        if self.recipe.scheduler is SchedulerName.plateau:
            scheduler.step(self.current_epoch + 1, metric)
        else:
            scheduler.step_update(num_updates=self.global_step)


class OneStageBothTasks(TwoLevelStrategy):
    """A single stage that trains ``self.net`` (a trunk with the output layers of
    :meth:`net_outputs`; and an unfrozen backbone) on a weighted sum of both tasks'
    cross-entropies; subclasses set the stage name and the default weights."""

    stage_name = "joint"
    default_loss_weights: Mapping[str, float] = {"category": 1.0, "landmark": 1.0}

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.1,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(backbone, hierarchy, stages, (self.stage_name,))
        self.loss_weights = check_loss_weights(
            dict(self.default_loss_weights) | dict(loss_weights or {})
        )
        self.net = TrunkAndHeads(backbone.num_features, hidden, dropout, self.net_outputs())

    def net_outputs(self) -> dict[str, int]:
        """Classes of each output layer of ``self.net``: by default one layer per task."""
        return dict(self.num_classes)

    def stage_tasks(self, stage: str) -> tuple[str, ...]:
        return TASKS

    def loss_weight(self, task: str) -> float:
        return self.loss_weights[task]

    def trainable_in_stage(self, stage: str) -> list[nn.Module]:
        return [self.net, self.backbone]


class TaskPerStage(TwoLevelStrategy):
    """Two stages named after their tasks, ``first`` then the other, each training and
    testing its own task (shared by head_swap and feature_chain)."""

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        first: str,
    ) -> None:
        second = other_task(first)
        super().__init__(backbone, hierarchy, stages, (first, second))
        self.first, self.second = first, second

    def stage_tasks(self, stage: str) -> tuple[str, ...]:
        return (stage,)


class TrunkAndHeads(nn.Module):
    """A shared MLP trunk over backbone features and one linear output layer per task."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], dropout: float, classes: Mapping[str, int]
    ) -> None:
        super().__init__()
        self.trunk = MLP(in_features, hidden, dropout)
        self.heads = nn.ModuleDict(
            {task: nn.Linear(self.trunk.out_features, n) for task, n in classes.items()}
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(features)
        return {task: head(shared) for task, head in self.heads.items()}
