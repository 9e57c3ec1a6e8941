"""The shared base of every strategy: stages, task losses, metrics, optimiser, test outputs.

A strategy trains the two tasks (``category``, ``landmark``) in one or more *stages*; each
stage is its own ``Trainer.fit`` and names the tasks it trains and tests. Subclasses say
which tasks a stage trains (:meth:`stage_tasks`), what trains in it (:meth:`begin_stage`)
and how logits are made (:meth:`task_logits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.metrics import task_metrics
from landmark_tl.models.backbone import Backbone

TASKS = ("category", "landmark")
SPLITS = ("train", "val", "test")


@dataclass
class StageConfig:
    """Optimisation of one stage: its own epochs, learning rate and early stopping."""

    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int | None = None  # early-stopping patience on val/loss; None: no early stop


@dataclass
class TestOutputs:
    """Per task: predicted class, target and probabilities on the test split."""

    preds: dict[str, torch.Tensor] = field(default_factory=dict)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    probs: dict[str, torch.Tensor] = field(default_factory=dict)


class TwoLevelStrategy(L.LightningModule):
    """Backbone + strategy-specific heads, trained stage by stage."""

    stage_names: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
    ) -> None:
        super().__init__()
        unknown = set(stages) ^ set(self.stage_names)
        if unknown:
            raise ValueError(
                f"strategy.stages must name exactly {list(self.stage_names)} for "
                f"{type(self).__name__}; got {sorted(stages)}"
            )
        self.backbone = backbone
        self.hierarchy = hierarchy
        self.stages = {name: stages[name] for name in self.stage_names}
        self.num_classes = {
            "category": hierarchy.num_categories,
            "landmark": hierarchy.num_landmarks,
        }
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{task}": task_metrics(self.num_classes[task])
                for split in SPLITS
                for task in TASKS
            }
        )
        self.stage = self.stage_names[0]
        self.test_outputs = TestOutputs()
        self._test_batches: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []

    # --- what subclasses define -------------------------------------------------------
    def stage_tasks(self, stage: str) -> tuple[str, ...]:
        """Tasks trained, validated and tested in ``stage``."""
        raise NotImplementedError

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of the current stage's tasks from backbone features."""
        raise NotImplementedError

    def loss_weight(self, task: str) -> float:
        """Weight of ``task``'s cross-entropy in the stage loss."""
        return 1.0

    def begin_stage(self, stage: str) -> None:
        """Make ``stage`` current; subclasses also set what trains in it."""
        if stage not in self.stages:
            raise ValueError(f"unknown stage '{stage}'; stages are {list(self.stage_names)}")
        self.stage = stage

    # --- shared behaviour ---------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        return self.stage_tasks(self.stage)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of an image batch; (N, D) precomputed features pass through."""
        return x if x.ndim == 2 else self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.task_logits(self.encode(x))

    def _step(self, batch: tuple[torch.Tensor, ...], split: str) -> torch.Tensor:
        x, category, landmark = batch
        targets = {"category": category, "landmark": landmark}
        logits = self(x)
        loss = torch.zeros((), device=x.device)
        for task in self.tasks:
            task_loss = F.cross_entropy(logits[task], targets[task])
            loss = loss + self.loss_weight(task) * task_loss
            metrics = self.metrics[f"{split}_{task}"]
            metrics.update(logits[task], targets[task])
            self.log(f"{split}/{task}_loss", task_loss, on_step=False, on_epoch=True)
            self.log_dict(
                {f"{split}/{task}_{k}": m for k, m in metrics.items()}, on_step=False, on_epoch=True
            )
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=split == "val")
        if split == "test":
            self._test_batches.append({t: (logits[t].detach(), targets[t]) for t in self.tasks})
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._test_batches = []

    def on_test_epoch_end(self) -> None:
        """Collect the test predictions of the current stage's tasks."""
        for task in self.tasks:
            logits = torch.cat([b[task][0] for b in self._test_batches]).float().cpu()
            self.test_outputs.targets[task] = torch.cat(
                [b[task][1] for b in self._test_batches]
            ).cpu()
            self.test_outputs.probs[task] = logits.softmax(-1)
            self.test_outputs.preds[task] = logits.argmax(-1)
        self._test_batches = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(f"stage '{self.stage}' has no trainable parameters")
        stage = self.stages[self.stage]
        return torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
