"""The baseline every comparison carries: linear probes on the frozen features.

``linear_probe`` fits, per task, a multinomial logistic regression on standardised
backbone features; ``hierarchical_probe`` fits the landmark probe only and takes category
probabilities as sums over each category's landmarks (as ``hierarchical`` does).

Each probe minimises mean cross-entropy + l2/2 · ‖W‖² (bias not penalised; sklearn's
``C`` is 1 / (n_train · l2)) full-batch with L-BFGS. Features in memory are used whole;
a split whose stored features exceed ``features.memory_mb`` is read from the feature
store's mapped rows a chunk at a time (loss and gradient summed over chunks, statistics in
streaming passes: the same fit, in bounded memory). Standardisation statistics come from
the training split only; the strength l2 is chosen from ``l2_grid`` on the validation split
(highest macro F1 of the task as the model decodes it, ties to the lower validation
cross-entropy). The problem is strictly convex, so the fit at the chosen strength is the
refit on train at that strength, whatever it was warm-started from. With fewer training
images than feature dims the fit runs in the row space of the training features, exactly:
the penalised optimum's weights lie in that span (representer theorem).

The whole fit happens in ``on_train_start`` (one pass over the train and val loaders);
the stage's single epoch then only logs train/val scores, and the usual checkpoint, test
and run-dir files follow. Written in torch rather than with scikit-learn (not a
dependency) so that it runs on the trainer's device and needs no extra package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from landmark_tl.core.hierarchy import TASKS, LabelHierarchy
from landmark_tl.data.datamodule import mapped_split
from landmark_tl.data.features.store import Rows, row_chunks
from landmark_tl.evaluation.metrics import macro_f1
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.strategies.base import TwoLevelStrategy
from landmark_tl.models.strategies.hierarchical import Hierarchical
from landmark_tl.models.strategies.multi_output import MultiOutput
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import StageConfig

DEFAULT_L2_GRID = tuple(10.0 ** (k / 2) for k in range(-10, 5))  # 1e-5 … 100, half decades
MAX_ITERATIONS = 500  # L-BFGS iterations per fit; weak strengths on separable data stop here


Chunks = Callable[[], Iterable[torch.Tensor]]  # a split's rows in order, a chunk at a time


def fit_softmax_regression(
    features: torch.Tensor | Chunks,
    targets: torch.Tensor,
    num_classes: int,
    l2: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = MAX_ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (K, D), bias (K,)) minimising mean CE + l2/2 · ‖weight‖², full batch.

    ``features`` is (N, D), or a callable giving its rows in order a chunk at a time: the
    loss and its gradient are then summed over the chunks (the same objective, so the same
    optimum), and memory holds one chunk."""
    chunks = (lambda: (features,)) if isinstance(features, torch.Tensor) else features
    device, n = targets.device, len(targets)
    dim = next(iter(chunks())).shape[1] if init is None else init[0].shape[1]
    weight = torch.zeros(num_classes, dim, device=device)
    bias = torch.zeros(num_classes, device=device)
    if init is not None:
        weight, bias = init[0].detach().clone(), init[1].detach().clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        part, total, start = 0.5 * l2 * weight.square().sum(), 0.0, 0
        for x in chunks():  # gradients accumulate chunk by chunk (one pass in memory)
            y = targets[start : start + len(x)]
            start += len(x)
            part = part + F.cross_entropy(x.to(device) @ weight.T + bias, y, reduction="sum") / n
            part.backward()
            total, part = total + part.detach(), 0.0
        return total

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


class ProbeFit(TwoLevelStrategy):
    """Standardised inputs and an L-BFGS fit with the strength chosen on validation, for
    subclasses whose output layers (:meth:`probe_layers`) sit directly on the features."""

    takes_head = False
    # the probe is fitted before its epoch, whose training_step only logs (returns no loss)
    intended_notices = (*TwoLevelStrategy.intended_notices, r"`training_step` returned `None`")
    trains_backbone = False

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        l2_grid: Sequence[float] | None = None,
    ) -> None:
        # the strategy this probe is mixed into, with its output layers right on the features
        super().__init__(backbone, hierarchy, stages, hidden=(), dropout=0.0)
        self._init_probe(backbone.num_features, l2_grid)

    def _init_probe(self, width: int, l2_grid: Sequence[float] | None) -> None:
        grid = tuple(DEFAULT_L2_GRID if l2_grid is None else l2_grid)
        if not grid or min(grid) <= 0:
            raise ValueError(f"l2_grid={list(grid)}: give one or more strengths > 0")
        if not self.backbone.frozen:
            raise ValueError(
                f"{type(self).__name__} probes frozen features: set backbone.freeze=all"
            )
        self.l2_grid = tuple(sorted(grid, reverse=True))  # strong to weak: warm starts
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_scale", torch.ones(width))
        # Chosen strength per task (TASKS order), NaN for a task without its own probe.
        self.register_buffer("chosen_l2", torch.full((len(TASKS),), float("nan")))

    def probe_layers(self) -> dict[str, nn.Linear]:
        """The linear output layer fitted for each probed task."""
        raise NotImplementedError

    def averaged_weights(self, stage: str) -> dict[str, torch.Tensor]:
        """None: a probe is fitted, not stepped, so an average of its weights is the fit."""
        return {}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features, standardised with the training split's statistics."""
        return (super().encode(x) - self.feature_mean) / self.feature_scale

    def on_train_start(self) -> None:
        train, val = (self._raw_features(split) for split in ("train", "val"))
        self.fit_probes(train, val)

    @torch.no_grad()
    def _raw_features(self, split: str) -> tuple[Rows, dict[str, torch.Tensor]]:
        """A split's (unstandardised) features and targets in dataset order: the stored
        rows themselves when they exceed ``features.memory_mb`` (the fit reads them a
        chunk at a time), else all of them in memory, read through the datamodule's
        loader (the fit does not depend on the shuffle)."""
        shuffled = getattr(self.trainer.datamodule, f"{split}_dataloader")()
        mapped = mapped_split(shuffled.dataset)
        if mapped is not None:
            return mapped
        loader = DataLoader(
            shuffled.dataset, batch_size=shuffled.batch_size, collate_fn=shuffled.collate_fn
        )
        xs = [torch.zeros(0, self.feature_mean.numel(), device=self.device)]  # none: empty
        categories = [torch.zeros(0, dtype=torch.long, device=self.device)]
        landmarks = [categories[0]]
        for x, category, landmark in loader:
            xs.append(TwoLevelStrategy.encode(self, x.to(self.device)).float())
            categories.append(category.to(self.device))
            landmarks.append(landmark.to(self.device))
        targets = {"category": torch.cat(categories), "landmark": torch.cat(landmarks)}
        return torch.cat(xs), targets

    def fit_probes(
        self,
        train: tuple[Rows, Mapping[str, torch.Tensor]],
        val: tuple[Rows, Mapping[str, torch.Tensor]],
    ) -> dict[str, float]:
        """Standardise on ``train``, fit each probe at every strength, keep the strength
        best on ``val``; returns the chosen strength per probed task. Features in memory
        are used whole; stored rows (:class:`FeatureRows`) are read a chunk at a time, in
        every pass over them (statistics, row space, each L-BFGS evaluation)."""
        x_train, y_train = train
        x_val, y_val = val
        if len(x_val) == 0 and len(self.l2_grid) > 1:
            raise ValueError(
                f"strategy.l2_grid has {len(self.l2_grid)} strengths to choose from on the "
                "validation split, and it has no images: set data.split.val above 0, or give "
                "strategy.l2_grid one strength"
            )
        mean, scale = _standardisation(x_train)
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(scale)
        z_train, z_val = self._standardised(x_train), self._standardised(x_val)
        basis = _row_space(z_train, len(x_train), self.feature_mean.numel())
        coords = z_train
        if basis is not None and isinstance(x_train, torch.Tensor):
            projected = next(iter(z_train())) @ basis.T  # in memory: projected once
            coords = lambda: (projected,)  # noqa: E731
        elif basis is not None:
            coords = lambda: (z @ basis.T for z in z_train())  # noqa: E731
        y_train = {t: y.to(self.device) for t, y in y_train.items()}
        y_val = {t: y.to(self.device) for t, y in y_val.items()}
        chosen = {}
        for task, layer in self.probe_layers().items():
            chosen[task] = self._fit_probe(task, layer, coords, y_train[task], basis, z_val, y_val)
            self.chosen_l2[TASKS.index(task)] = chosen[task]
        return chosen

    def _standardised(self, x: Rows) -> Chunks:
        """``x``'s rows standardised on this device: a tensor at once, stored rows as read."""
        if isinstance(x, torch.Tensor):
            z = (x.to(self.device) - self.feature_mean) / self.feature_scale
            return lambda: (z,)
        return lambda: (
            (chunk.to(self.device) - self.feature_mean) / self.feature_scale for chunk in x.chunks()
        )

    def _fit_probe(
        self,
        task: str,
        layer: nn.Linear,
        train_coords: Chunks,
        y_train: torch.Tensor,
        basis: torch.Tensor | None,
        z_val: Chunks,
        y_val: Mapping[str, torch.Tensor],
    ) -> float:
        """Fit ``task``'s probe at every strength, strong to weak (warm starts), in the
        coordinates ``train_coords`` of ``basis`` (None: the features' own); keep the one
        best on validation."""
        classes = self.num_classes[task]
        best: tuple[tuple[float, float], float, tuple[torch.Tensor, torch.Tensor]] | None = None
        params = None
        for l2 in self.l2_grid:
            params = fit_softmax_regression(train_coords, y_train, classes, l2, init=params)
            full = (params[0] if basis is None else params[0] @ basis, params[1])
            _set_linear(layer, full)
            if len(self.l2_grid) == 1:  # nothing to choose (the val split may be empty)
                return l2
            with torch.no_grad():
                parts = [self.task_logits(z) for z in z_val()]
                logits = {t: torch.cat([p[t] for p in parts]) for t in parts[0]}
                pred = self.decode(logits)[task]
                loss = float(F.cross_entropy(logits[task], y_val[task]))
            score = (macro_f1(pred.cpu().numpy(), y_val[task].cpu().numpy(), classes), -loss)
            if best is None or score > best[0]:
                best = (score, l2, full)
        assert best is not None
        _set_linear(layer, best[2])
        return best[1]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Nothing left to optimise: log the fitted probes' training scores (returning no
        loss skips the optimiser's update; Lightning still counts the step)."""
        with torch.no_grad():
            self._step(batch, "train")

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        probed = {f"probe/{t}_l2": self.chosen_l2[TASKS.index(t)] for t in self.probe_layers()}
        self.log_dict(probed)


def _standardisation(x: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale (the standard deviation; 1 where it is ~0) of ``x``'s
    rows, in two passes over them a chunk at a time (float64 sums)."""
    n, total = len(x), 0.0
    for chunk in row_chunks(x):
        total = total + chunk.double().sum(dim=0)
    mean, squares = total / n, 0.0
    for chunk in row_chunks(x):
        squares = squares + (chunk.double() - mean.to(chunk.device)).square().sum(dim=0)
    std = (squares / n).sqrt()
    return mean.float(), torch.where(std > 1e-6, std, torch.ones_like(std)).float()


def _row_space(z: Chunks, n: int, dim: int) -> torch.Tensor | None:
    """An orthonormal (r, D) basis of the span of the n rows of ``z`` (given a chunk at a
    time) when there are fewer rows than dims (else None: the features' own coordinates);
    the weights W' (K, r) of the fit give W = W' · basis. From the Gram matrix
    Z·Zᵀ = U·S²·Uᵀ (float64, a pair of chunks at a time): basis = S⁻¹·Uᵀ·Z."""
    if n >= dim:
        return None
    gram, device = None, None
    row = 0
    for a in z():
        device = a.device
        gram = torch.zeros(n, n, dtype=torch.float64, device=device) if gram is None else gram
        col = 0
        for b in z():
            gram[row : row + len(a), col : col + len(b)] = a.double() @ b.double().T
            col += len(b)
        row += len(a)
    eig, u = torch.linalg.eigh(gram)
    keep = eig > eig.max() * 1e-12  # singular values above 1e-6 of the largest
    u = u[:, keep] / eig[keep].sqrt()
    basis = torch.zeros(u.shape[1], dim, dtype=torch.float64, device=device)
    row = 0
    for a in z():
        basis += u[row : row + len(a)].T @ a.double()
        row += len(a)
    return basis.float()


def _set_linear(layer: nn.Linear, params: tuple[torch.Tensor, torch.Tensor]) -> None:
    with torch.no_grad():
        layer.weight.copy_(params[0])
        layer.bias.copy_(params[1])


@dataclass
class LinearProbeConfig(StrategyConfig):
    name: str = "linear_probe"
    # strengths of the penalty l2/2*||W||^2 tried; the best validation macro F1 is kept
    l2_grid: list[float] = field(default_factory=lambda: list(DEFAULT_L2_GRID))


@dataclass
class HierarchicalProbeConfig(LinearProbeConfig):
    name: str = "hierarchical_probe"


@register_strategy(LinearProbeConfig)
class LinearProbe(ProbeFit, MultiOutput):
    """One stage, ``joint``: an independent probe per task."""

    def probe_layers(self) -> dict[str, nn.Linear]:
        return dict(self.net.heads.items())


@register_strategy(HierarchicalProbeConfig)
class HierarchicalProbe(ProbeFit, Hierarchical):
    """One stage, ``landmark``: a landmark probe; categories by summed probabilities."""

    def probe_layers(self) -> dict[str, nn.Linear]:
        return {"landmark": self.net.heads["landmark"]}
