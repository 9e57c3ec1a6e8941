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
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landmark_tl.config.lightning import VAL_LOSS, Monitor
from landmark_tl.data.features.store import Rows, row_chunks
from landmark_tl.models.optim import OptimizerName, Recipe
from landmark_tl.models.strategies.base import METRIC_NAMES, TwoLevelStrategy
from landmark_tl.training.divergence import divergence_hint

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as timm's create_optimizer_v2 leaves them
EPS = 1e-8


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` torch threads (None or 0: torch's setting as it is).

    A head's step is a handful of small ops (a 1280 x 512 matmul, Adam over its weights);
    spread over several threads, each op waits for the others to be scheduled, and on a
    busy machine that wait is most of the time: measured 8x slower on 2 threads than on 1
    for a group of 3 heads, 20x for a probe's L-BFGS fits, on 2 cores at load 6-9.
    """
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


class _MaskedDropouts:
    """Makes the template compute every member at once on stacked parameters.

    Inside this context the template's ``nn.Linear`` layers take (M, out, in) weights and
    (M, N, in) inputs (one batched matmul), its forward is its ``task_logits`` (the inputs
    are features), and its dropouts multiply by given masks: drawn from each member's own
    generator outside the model (a member without dropout gets masks of ones). Own code,
    not ``torch.func.vmap``: vmapped linear layers measured 2-3x slower here than batched
    matmuls, forward and backward.
    """

    def __init__(self, template: nn.Module) -> None:
        self.template = template
        self.modules = [m for m in template.modules() if isinstance(m, nn.Dropout)]
        self.linears = [m for m in template.modules() if isinstance(m, nn.Linear)]
        self.masks: dict[int, torch.Tensor] | None = None

    def __enter__(self) -> _MaskedDropouts:
        # an instance already in place (evaluation inside the training loop) stays: its
        # masks are None between steps, so every dropout is the identity there
        self.patched = [m for m in (*self.modules, *self.linears) if "forward" not in vars(m)]
        for key, module in enumerate(self.modules):
            if module in self.patched:
                module.forward = self._forward(key, module)  # type: ignore[method-assign]
        for module in self.linears:
            if module in self.patched:
                module.forward = _stacked_linear(module)  # type: ignore[method-assign]
        self.outer = "forward" not in vars(self.template)
        if self.outer:
            self.template.forward = self.template.task_logits  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self.patched:
            del module.forward
        if self.outer:
            del self.template.forward

    def _forward(self, key: int, module: nn.Dropout):  # noqa: ANN202
        def forward(x: torch.Tensor) -> torch.Tensor:
            if self.masks is None or key not in self.masks:  # eval, or fixed in this stage
                return x
            return x * self.masks[key]

        return forward

    def active_widths(self, template: nn.Module, width: int) -> list[tuple[int, int]]:
        """(key, input width) of the dropouts that run in training mode, in the order they
        run (a forward pass of two dummy rows with hooks records it)."""
        order: list[tuple[int, int]] = []
        hooks = [
            module.register_forward_hook(
                lambda mod, args, out, key=key: (
                    order.append((key, args[0].shape[-1])) if mod.training else None
                )
            )
            for key, module in enumerate(self.modules)
        ]
        try:
            with torch.no_grad():
                template(torch.zeros(2, width))
        finally:
            for hook in hooks:
                hook.remove()
        return order


def head_parameters(module: TwoLevelStrategy) -> list[tuple[str, nn.Parameter]]:
    """The parameters outside the backbone, in registration order."""
    return [(n, p) for n, p in module.named_parameters() if not n.startswith("backbone.")]


def _cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-member mean cross-entropy of (M, B, K) logits and (M, B) targets: (M,)."""
    m, b, k = logits.shape
    losses = F.cross_entropy(
        logits.reshape(m * b, k),
        targets.reshape(m * b),
        weight=weight,
        label_smoothing=label_smoothing,
        reduction="none",
    ).reshape(m, b)
    if weight is None:
        return losses.mean(dim=1)
    return losses.sum(dim=1) / weight[targets].sum(dim=1)


def _counts(preds: torch.Tensor, targets: torch.Tensor, classes: int) -> torch.Tensor:
    """Per member (hits, predicted, actual) class counts of (M, N) labels: (M, 3, K), one
    ``bincount`` per kind for all members (class ``k`` of member ``m`` is bin ``m·K + k``)."""
    members = len(preds)
    offset = torch.arange(members, device=preds.device)[:, None] * classes
    p, t = (preds.long() + offset).reshape(-1), (targets.long() + offset).reshape(-1)
    size = members * classes
    kinds = (
        torch.bincount(t[p == t], minlength=size),
        torch.bincount(p, minlength=size),
        torch.bincount(t, minlength=size),
    )
    return torch.stack(kinds).reshape(3, members, classes).transpose(0, 1)


def _scores(counts: torch.Tensor) -> tuple[float, float]:
    """(macro F1, accuracy) from one member's (3, K) counts, as the logged metrics."""
    hits, predicted, actual = counts
    support = predicted + actual  # 2·TP + FP + FN; classes in neither are left out (MacroF1)
    present = support > 0
    f1 = (2.0 * hits[present] / support[present]).mean() if present.any() else torch.tensor(0.0)
    accuracy = hits.sum() / actual.sum().clamp(min=1)
    return float(f1.float()), float(accuracy.float())


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
        self.template = max(self.modules, key=lambda m: sum(1 for _ in _dropouts(m)))
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
        dropouts: _MaskedDropouts,
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
            per_task[task] = _cross_entropy(logits[task], targets[task], weight, smoothing)
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
        tracker = _Stopping(self.settings, self.monitor.mode)
        steps_per_epoch = math.ceil(len(train) / self.batch_size)
        train = SplitTensors(
            train.x.to(self.device) if isinstance(train.x, torch.Tensor) else train.x,
            {t: y.to(self.device) for t, y in train.targets.items()},
        )
        width = train.x.shape[1] if isinstance(train.x, torch.Tensor) else train.x.width
        with _MaskedDropouts(self.template) as dropouts:
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
                improved, stopped = [], []
                for m in range(members):
                    if not tracker.running[m]:
                        continue
                    step = (epoch + 1) * steps_per_epoch
                    rows = outcomes[m].rows
                    if val_rows is not None:
                        rows.append({"epoch": epoch, "step": step - 1, **val_rows[m]})
                    member_counts = {t: counts[t][m] for t in self.tasks}
                    train_row = self._row("train", losses[m], member_counts)
                    rows.append({"epoch": epoch, "step": step - 1, **train_row})
                    outcomes[m].epochs_run, outcomes[m].steps = epoch + 1, step
                    score = None if val_rows is None else val_rows[m][self.monitor.key]
                    if tracker.update(m, epoch, score):
                        improved.append(m)
                        outcomes[m].best_epoch, outcomes[m].best_score = epoch, score
                    if not tracker.running[m]:
                        stopped.append(m)
                _copy_members(kept, params, improved)
                _copy_members(last, params, stopped)
        for m, outcome in enumerate(outcomes):
            outcome.best_state = self.unstack(kept, m)
            outcome.last_state = self.unstack(last, m)
        return outcomes, time.perf_counter() - start

    def _train_epoch(
        self,
        dropouts: _MaskedDropouts,
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
        counts: dict[str, torch.Tensor] = {}
        for start in range(0, n, self.batch_size):
            index = perm[:, start : start + self.batch_size]
            rows = index.shape[1]
            targets = {t: v[index] for t, v in train.targets.items()}
            masks = self._masks(order, generators, rows)
            with torch.set_grad_enabled(optimiser is not None):
                logits = self._logits(dropouts, params, _take(train.x, index), masks)
                total, per_task = self._loss(logits, targets, loss_weights, train=True)
            if optimiser is not None:
                grads = torch.autograd.grad(total.sum(), [params[t] for t in self.trainable])
                optimiser.step(dict(zip(self.trainable, grads, strict=True)))
            with torch.no_grad():
                losses = torch.stack([total] + [per_task[t] for t in self.tasks], dim=1)
                sums += losses * rows
                preds = self.template.decode({t: v.detach() for t, v in logits.items()})
                for task in self.tasks:
                    c = _counts(preds[task], targets[task], logits[task].shape[-1])
                    counts[task] = c if task not in counts else counts[task] + c
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
        with torch.no_grad(), _MaskedDropouts(self.template) as dropouts:
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
            t: _counts(
                preds[t],
                data.targets[t].to(preds[t].device).expand_as(preds[t]),
                self.template.num_classes[t],
            ).cpu()
            for t in self.tasks
        }
        return [
            self._row(
                split,
                torch.stack([total[m]] + [per_task[t][m] for t in self.tasks]).cpu(),
                {t: counts[t][m] for t in self.tasks},
            )
            for m in range(len(self.modules))
        ]

    def _row(self, split: str, losses: torch.Tensor, counts: dict[str, torch.Tensor]) -> dict:
        """Logged values as ``TwoLevelStrategy._log_epoch`` names them (float32 values)."""
        values: dict[str, float] = {f"{split}/loss": _f32(losses[0])}
        scores = {}
        for i, task in enumerate(self.tasks):
            values[f"{split}/{task}_loss"] = _f32(losses[1 + i])
            f1, acc = _scores(counts[task])
            scores[task] = {"f1": f1, "acc": acc}
            values[f"{split}/{task}_f1"], values[f"{split}/{task}_acc"] = _f32(f1), _f32(acc)
        for name in METRIC_NAMES:
            values[f"{split}/{name}"] = _f32(
                torch.tensor([scores[t][name] for t in self.tasks], dtype=torch.float32).mean()
            )
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


class _Stopping:
    """ModelCheckpoint and EarlyStopping of each member on the monitor (``mode`` min or
    max, strict improvement as Lightning's): the weights are kept when it improved (the
    first epoch always; every epoch without validation); a member stops after ``patience``
    epochs without improvement, on a non-finite score, or at its own last epoch."""

    def __init__(self, settings: Sequence[StageSettings], mode: str = "min") -> None:
        self.settings = list(settings)
        self.sign = 1.0 if mode == "min" else -1.0  # compare sign * score, lower is better
        self.running = [True] * len(settings)
        self.best = [math.inf] * len(settings)
        self.waits = [0] * len(settings)
        self.kept_any = [False] * len(settings)

    def update(self, m: int, epoch: int, score: float | None) -> bool:
        """Record member ``m``'s epoch; whether its weights are the new best."""
        setting = self.settings[m]
        signed = None if score is None else self.sign * score
        better = signed is not None and signed < self.best[m]
        keep = score is None or not self.kept_any[m] or better
        self.kept_any[m] = True
        if signed is not None and setting.patience is not None:
            self.waits[m] = 0 if better else self.waits[m] + 1
            if self.waits[m] >= setting.patience or not math.isfinite(signed):
                self.running[m] = False
        if better:
            self.best[m] = signed
        if epoch + 1 >= setting.epochs:
            self.running[m] = False
        return keep


def _take(x: Rows, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (any shape) of ``x``, on ``index``'s device: indexed in memory, or
    read from the feature store's mapped rows (a minibatch at a time)."""
    if isinstance(x, torch.Tensor):
        return x[index]
    rows = x[index.reshape(-1).cpu().numpy()]
    return rows.reshape(*index.shape, rows.shape[-1]).to(index.device)


def _copy_members(
    into: dict[str, torch.Tensor], source: dict[str, torch.Tensor], members: list[int]
) -> None:
    """Copy the slices of ``members`` from ``source`` into ``into``."""
    if not members:
        return
    index = torch.tensor(members, device=next(iter(source.values())).device)
    with torch.no_grad():
        for name, value in source.items():
            into[name].index_copy_(0, index, value.detach().index_select(0, index))


def _stacked_linear(module: nn.Linear):  # noqa: ANN202
    """``module``'s forward for stacked (M, out, in) weights and (M, N, in) inputs; its own
    (out, in) weights on (N, in) inputs as usual."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias
        if weight.ndim == 2:
            return F.linear(x, weight, bias)
        # (W · xᵀ)ᵀ rather than x · Wᵀ: the weights' gradient then comes out contiguous,
        # as the fused Adam kernel reads it (a copy per step and layer otherwise)
        inputs = x.transpose(1, 2)
        if bias is None:
            return torch.bmm(weight, inputs).transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(2), weight, inputs).transpose(1, 2)

    return forward


def _dropouts(module: nn.Module) -> list[nn.Dropout]:
    return [m for m in module.modules() if isinstance(m, nn.Dropout)]


def _f32(value: float | torch.Tensor) -> float:
    """A value as Lightning logs it: a float32 tensor's ``item()``."""
    return float(torch.as_tensor(value, dtype=torch.float32).item())
