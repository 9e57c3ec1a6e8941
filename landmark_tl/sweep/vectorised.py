"""One stage of many runs' heads trained at once: stacked parameters, one vectorised loop.

Every member is a strategy module built exactly as its own run builds it (same seed, so the
same initial weights). Their head parameters are stacked along a new first dimension and
each step runs all members' forward passes as one call of the strategy's own
``task_logits`` on a template member (``torch.func.functional_call`` with the stacked
parameters, linear layers as batched matmuls), so a strategy's logits, loss weights and
decoding are its own code, not a copy.

Why a plain loop and not a Lightning ``Trainer`` per member: with a frozen backbone a
step of a tiny head costs microseconds, and ``Trainer.fit`` adds about 5 ms of fixed work
per step (hooks, logging, checkpoint callbacks) and seconds per fit — paid once per run
and stage, that is what made sweeps cost several feature passes. Here the loop does
only what a separate run does to its numbers, for all members in one go.

Equivalence with separate runs (same seeds): each member has its own random stream
(``torch.Generator``) that consumes numbers in the order a separate run's global stream
does — the DataLoader's base seed and the RandomSampler's seed at each epoch's start,
every dropout mask (``bernoulli_`` of the same shape, in the order the dropouts run), the
validation loader's base seed — so batch orders and dropout masks are the same. Adam is
torch's fused kernel with a learning rate per member. Only float rounding differs (fused
Adam, batched matmuls), well inside the tolerance the tests check (the same test
predictions on >= 99% of images, |ΔF1| <= 0.005).

The pieces: :mod:`landmark_tl.sweep.stacked` (stacked parameters' forward and loss),
:mod:`landmark_tl.sweep.stopping` (each member's checkpoint choice and early stopping);
the logged scores come from the shared counting kernel and the task-metric registry
(:mod:`landmark_tl.evaluation.counts`, :mod:`landmark_tl.evaluation.registry`), as a
separate run's metrics do. This module: the loop, its random streams and fused Adam.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from landmark_tl.config.lightning import VAL_LOSS, Monitor
from landmark_tl.data.features.store import Rows, row_chunks
from landmark_tl.evaluation.counts import ClassCounts, class_counts
from landmark_tl.evaluation.registry import registered_metrics
from landmark_tl.models.optim import OptimizerName, Recipe
from landmark_tl.models.strategies.base import TwoLevelStrategy
from landmark_tl.sweep.stacked import (
    MaskedDropouts,
    copy_members,
    dropouts_of,
    head_parameters,
    member_cross_entropy,
    take_rows,
)
from landmark_tl.sweep.stopping import MemberStopping
from landmark_tl.training.divergence import divergence_hint

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as timm's create_optimizer_v2 leaves them
EPS = 1e-8


@dataclass
class StageSettings:
    """What one member does in a stage: its own optimisation and random stream."""

    epochs: int
    lr: float
    weight_decay: float
    patience: int | None
    seed: int  # the stage's seed (run seed + stage index)
    loss_weights: dict[str, float]
    dropout: float


@dataclass
class MemberOutcome:
    """One member's stage: chosen and last weights, log rows, or why it failed."""

    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    last_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_epoch: int | None = None
    best_score: float | None = None  # the monitor of the kept weights (None: no validation)
    epochs_run: int = 0
    steps: int = 0
    rows: list[dict[str, float | int]] = field(default_factory=list)
    failed: str | None = None


@dataclass
class SplitTensors:
    """A split's inputs (features) and targets, in dataset order; ``x`` in memory, or the
    feature store's rows (:class:`FeatureRows`, more than ``features.memory_mb``), read a
    batch at a time."""

    x: Rows
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.x)


def _member_scores(counts: dict[str, ClassCounts]) -> dict[str, dict[str, torch.Tensor]]:
    """Per task, every registered metric of each member's (M, K) counts: (M,) float32
    values, as the strategies' metrics log them."""
    return {
        task: {m.name: m.from_counts(c).float() for m in registered_metrics()}
        for task, c in counts.items()
    }


class VectorisedStage:
    """Train one stage of every member together; see the module docstring."""

    def __init__(
        self,
        modules: Sequence[TwoLevelStrategy],
        settings: Sequence[StageSettings],
        recipe: Recipe,
        batch_size: int,
        class_weights: dict[str, torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
        monitor: Monitor = VAL_LOSS,
        fitted: bool = False,
    ) -> None:
        self.modules = list(modules)
        self.monitor = monitor
        # the heads come fitted (probes): the epochs only log, as a probe's epoch does
        self.fitted = fitted
        self.settings = list(settings)
        self.recipe = recipe
        self.batch_size = batch_size
        self.class_weights = class_weights
        self.device = torch.device(device)
        # the template carries the dropout modules when any member has them
        self.template = max(self.modules, key=lambda m: len(dropouts_of(m)))
        self.names = [name for name, _ in head_parameters(self.template)]
        self.trainable = [n for n, p in head_parameters(self.template) if p.requires_grad]
        self.tasks = self.template.tasks
        self.stage = self.template.stage

    # --- stacking --------------------------------------------------------------------------
    def stack(self) -> dict[str, torch.Tensor]:
        """Each member's head parameters, matched to the template's names by position."""
        stacked: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        for module in self.modules:
            params = head_parameters(module)
            if len(params) != len(self.names):
                raise ValueError(
                    f"head.hidden: members of a head batch need the same layers; "
                    f"{len(params)} vs {len(self.names)} parameter tensors"
                )
            for name, (_, p) in zip(self.names, params, strict=True):
                stacked[name].append(p.detach())
        return {
            name: torch.stack(values).to(self.device).requires_grad_(name in self.trainable)
            for name, values in stacked.items()
        }

    def unstack(self, params: dict[str, torch.Tensor], member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s head parameters under its own module's names."""
        own = [name for name, _ in head_parameters(self.modules[member])]
        return {
            mine: params[name][member].detach().cpu().clone()
            for mine, name in zip(own, self.names, strict=True)
        }

    # --- forward ---------------------------------------------------------------------------
    def _logits(
        self,
        dropouts: MaskedDropouts,
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        masks: dict[int, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """Logits of every member: (M, N, K) per task, ``x`` (M, N, D) or shared (N, D)."""
        if x.ndim == 2:
            x = x.expand(len(self.modules), *x.shape)
        dropouts.masks = masks
        try:
            # untied: the template has no shared weights, and tying walks every module of
            # the backbone at each call
            return functional_call(self.template, params, (x,), tie_weights=False)
        finally:
            dropouts.masks = None

    def _loss(
        self,
        logits: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        weights: torch.Tensor,
        train: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per member the stage loss (M,) and each task's loss, as the strategies compute
        them (training: label smoothing and class weights; else plain cross-entropy)."""
        per_task = {}
        total = torch.zeros(len(self.modules), device=self.device)
        for i, task in enumerate(self.tasks):
            weight = None
            if train and self.class_weights is not None:
                weight = self.class_weights[task].to(self.device)
            smoothing = self.recipe.label_smoothing if train else 0.0
            per_task[task] = member_cross_entropy(logits[task], targets[task], weight, smoothing)
            total = total + weights[:, i] * per_task[task]
        return total, per_task

    # --- the loop ----------------------------------------------------------------------------
    def run(
        self, train: SplitTensors, val: SplitTensors | None
    ) -> tuple[list[MemberOutcome], float]:
        """Train every member; returns their outcomes and the wall time in seconds."""
        start = time.perf_counter()
        members = len(self.modules)
        outcomes = [MemberOutcome() for _ in range(members)]
        params = self.stack()
        kept = {n: p.detach().clone() for n, p in params.items()}  # each member's best
        last = {n: p.detach().clone() for n, p in params.items()}  # ... and final weights
        optimiser = (
            None
            if self.fitted
            else _StackedAdam(params, self.trainable, self.settings, self.recipe)
        )
        loss_weights = torch.tensor(
            [[s.loss_weights[t] for t in self.tasks] for s in self.settings], device=self.device
        )
        generators = [torch.Generator().manual_seed(s.seed) for s in self.settings]
        tracker = MemberStopping(
            [s.epochs for s in self.settings],
            [s.patience for s in self.settings],
            self.monitor.mode,
        )
        steps_per_epoch = math.ceil(len(train) / self.batch_size)
        train = SplitTensors(
            train.x.to(self.device) if isinstance(train.x, torch.Tensor) else train.x,
            {t: y.to(self.device) for t, y in train.targets.items()},
        )
        width = train.x.shape[1] if isinstance(train.x, torch.Tensor) else train.x.width
        with MaskedDropouts(self.template) as dropouts:
            self.template.train()  # the stage's modes: dropout where a separate run has it
            order = dropouts.active_widths(self.template, width)
            for epoch in range(max(s.epochs for s in self.settings)):
                if not any(tracker.running):
                    break
                losses, counts = self._train_epoch(
                    dropouts, params, optimiser, train, generators, order, loss_weights
                )
                for m in range(members):  # a diverged member stops; the others go on
                    if tracker.running[m] and not bool(torch.isfinite(losses[m]).all()):
                        tracker.running[m] = False
                        outcomes[m].failed = (
                            f"stage {self.stage}: the training loss became "
                            f"{float(losses[m, 0])} in epoch {epoch} (diverged); "
                            + divergence_hint(self.stage, self.settings[m].lr)
                        )
                val_rows = None
                if val is not None:
                    for g in generators:  # the validation loader's base seed
                        torch.empty((), dtype=torch.int64).random_(generator=g)
                    _, preds, total, per_task = self.evaluate(params, val, loss_weights)
                    val_rows = self.rows("val", val, preds, total, per_task)
                train_scores = _member_scores(counts)
                improved, stopped = [], []
                for m in range(members):
                    if not tracker.running[m]:
                        continue
                    step = (epoch + 1) * steps_per_epoch
                    rows = outcomes[m].rows
                    if val_rows is not None:
                        rows.append({"epoch": epoch, "step": step - 1, **val_rows[m]})
                    train_row = self._row("train", losses[m], train_scores, m)
                    rows.append({"epoch": epoch, "step": step - 1, **train_row})
                    outcomes[m].epochs_run, outcomes[m].steps = epoch + 1, step
                    score = None if val_rows is None else val_rows[m][self.monitor.key]
                    if tracker.update(m, epoch, score):
                        improved.append(m)
                        outcomes[m].best_epoch, outcomes[m].best_score = epoch, score
                    if not tracker.running[m]:
                        stopped.append(m)
                copy_members(kept, params, improved)
                copy_members(last, params, stopped)
        for m, outcome in enumerate(outcomes):
            outcome.best_state = self.unstack(kept, m)
            outcome.last_state = self.unstack(last, m)
        return outcomes, time.perf_counter() - start

    def _train_epoch(
        self,
        dropouts: MaskedDropouts,
        params: dict[str, torch.Tensor],
        optimiser: _StackedAdam | None,
        train: SplitTensors,
        generators: list[torch.Generator],
        order: list[tuple[int, int]],
        loss_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One epoch of every member, each in its own batch order (no optimiser: the
        batches are only scored); returns per member the epoch's mean losses
        (M, 1 + tasks) and class counts of its predictions per task."""
        n = len(train)
        permutations = []
        for g in generators:  # the DataLoader's base seed, then the RandomSampler's seed
            torch.empty((), dtype=torch.int64).random_(generator=g)
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=g).item())
            permutations.append(torch.randperm(n, generator=torch.Generator().manual_seed(seed)))
        perm = torch.stack(permutations).to(self.device)
        sums = torch.zeros(len(generators), 1 + len(self.tasks), device=self.device)
        counts: dict[str, ClassCounts] = {}
        for start in range(0, n, self.batch_size):
            index = perm[:, start : start + self.batch_size]
            rows = index.shape[1]
            targets = {t: v[index] for t, v in train.targets.items()}
            masks = self._masks(order, generators, rows)
            with torch.set_grad_enabled(optimiser is not None):
                logits = self._logits(dropouts, params, take_rows(train.x, index), masks)
                total, per_task = self._loss(logits, targets, loss_weights, train=True)
            if optimiser is not None:
                grads = torch.autograd.grad(total.sum(), [params[t] for t in self.trainable])
                optimiser.step(dict(zip(self.trainable, grads, strict=True)))
            with torch.no_grad():
                losses = torch.stack([total] + [per_task[t] for t in self.tasks], dim=1)
                sums += losses * rows
                preds = self.template.decode({t: v.detach() for t, v in logits.items()})
                for task in self.tasks:
                    c = class_counts(preds[task], targets[task], logits[task].shape[-1])
                    counts[task] = c if task not in counts else counts[task].plus(c)
        return (sums / n).cpu(), {t: c.cpu() for t, c in counts.items()}

    def _masks(
        self, order: list[tuple[int, int]], generators: list[torch.Generator], rows: int
    ) -> dict[int, torch.Tensor] | None:
        """Each member's dropout masks of this step, drawn as ``nn.Dropout`` draws them."""
        if not order:
            return None
        masks: dict[int, list[torch.Tensor]] = {key: [] for key, _ in order}
        for setting, g in zip(self.settings, generators, strict=True):
            p = setting.dropout
            for key, width in order:
                if p > 0:
                    noise = torch.empty(rows, width).bernoulli_(1 - p, generator=g)
                    masks[key].append(noise.div_(1 - p))
                else:
                    masks[key].append(torch.ones(rows, width))
        return {key: torch.stack(v).to(self.device) for key, v in masks.items()}

    def evaluate(
        self,
        params: dict[str, torch.Tensor],
        split: SplitTensors,
        loss_weights: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, dict]:
        """Eval-mode logits (M, N, K), decoded predictions, stage loss (M,), task losses."""
        # no masks: every dropout is the identity, as in eval mode (the heads have no other
        # layer that trains differently)
        with torch.no_grad(), MaskedDropouts(self.template) as dropouts:
            parts = [
                self._logits(dropouts, params, x.to(self.device), None)
                for x in row_chunks(split.x)  # in memory: one chunk
            ]
            logits = {t: torch.cat([p[t] for p in parts], dim=1) for t in parts[0]}
            targets = {
                t: y.to(self.device).expand(len(self.modules), -1) for t, y in split.targets.items()
            }
            total, per_task = self._loss(logits, targets, loss_weights, train=False)
            preds = self.template.decode(logits)
        return logits, preds, total, per_task

    def rows(
        self,
        split: str,
        data: SplitTensors,
        preds: dict[str, torch.Tensor],
        total: torch.Tensor,
        per_task: dict[str, torch.Tensor],
    ) -> list[dict[str, float]]:
        """Each member's logged values of ``split`` from its predictions and losses."""
        counts = {
            t: class_counts(
                preds[t],
                data.targets[t].to(preds[t].device).expand_as(preds[t]),
                self.template.num_classes[t],
            ).cpu()
            for t in self.tasks
        }
        scores = _member_scores(counts)
        return [
            self._row(
                split,
                torch.stack([total[m]] + [per_task[t][m] for t in self.tasks]).cpu(),
                scores,
                m,
            )
            for m in range(len(self.modules))
        ]

    def _row(
        self,
        split: str,
        losses: torch.Tensor,
        scores: dict[str, dict[str, torch.Tensor]],
        member: int,
    ) -> dict[str, float]:
        """Member ``member``'s logged values as ``TwoLevelStrategy._log_epoch`` names them
        (float32 values; ``scores`` per task and metric name, of every member)."""
        values: dict[str, float] = {f"{split}/loss": _f32(losses[0])}
        for i, task in enumerate(self.tasks):
            values[f"{split}/{task}_loss"] = _f32(losses[1 + i])
            for name, value in scores[task].items():
                values[f"{split}/{task}_{name}"] = _f32(value[member])
        for metric in registered_metrics():  # the tasks' mean, as the strategies log it
            per_task = [scores[t][metric.name][member] for t in self.tasks]
            values[f"{split}/{metric.name}"] = _f32(torch.stack(per_task).mean())
        return values


class _StackedAdam:
    """Adam / AdamW on stacked parameters with a learning rate and weight decay per member;
    no weight decay on biases and 1-d tensors (timm's parameter groups).

    torch's optimisers take one learning rate per parameter tensor, and here one tensor
    holds every member, so the step calls torch's fused Adam kernel (``_fused_adam_``, as
    ``torch.optim.Adam(fused=True)`` does) on each member's slices, one call per distinct
    (learning rate, weight decay): one pass over the weights instead of the eight of the
    single-tensor path (measured 5-7x faster on CPU). It is the same update up to float
    rounding; separate runs use the single-tensor path, hence the tolerance of the
    equivalence tests.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        trainable: Sequence[str],
        settings: Sequence[StageSettings],
        recipe: Recipe,
    ) -> None:
        self.params = params
        self.state = {
            n: (torch.zeros_like(params[n]), torch.zeros_like(params[n])) for n in trainable
        }
        self.kernel = (
            torch._fused_adamw_ if recipe.optimizer is OptimizerName.adamw else torch._fused_adam_
        )
        self.calls: dict[str, dict[tuple[float, float], list[int]]] = {}
        for name in trainable:
            decays = params[name].ndim > 2 and not name.endswith(".bias")  # member dims > 1
            groups: dict[tuple[float, float], list[int]] = {}
            for m, s in enumerate(settings):
                groups.setdefault((s.lr, s.weight_decay if decays else 0.0), []).append(m)
            self.calls[name] = groups
        self.step_count = torch.zeros((), dtype=torch.float32)

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor]) -> None:
        self.step_count += 1
        for name, grad in grads.items():
            p, (exp_avg, exp_avg_sq) = self.params[name], self.state[name]
            grad = grad.contiguous()  # the fused kernel reads memory densely
            for (lr, weight_decay), members in self.calls[name].items():
                self.kernel(
                    [p[m] for m in members],
                    [grad[m] for m in members],
                    [exp_avg[m] for m in members],
                    [exp_avg_sq[m] for m in members],
                    [],
                    [self.step_count] * len(members),
                    lr=lr,
                    beta1=BETAS[0],
                    beta2=BETAS[1],
                    weight_decay=weight_decay,
                    eps=EPS,
                    amsgrad=False,
                    maximize=False,
                )


def _f32(value: float | torch.Tensor) -> float:
    """A value as Lightning logs it: a float32 tensor's ``item()``."""
    return float(torch.as_tensor(value, dtype=torch.float32).item())
