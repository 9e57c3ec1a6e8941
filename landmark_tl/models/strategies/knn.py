"""``knn``: a weighted k-nearest-neighbour classifier on the frozen features (DINOv2's
kNN evaluation; :mod:`landmark_tl.models.neighbours`).

The landmark comes from the neighbours' vote; the category is the predicted landmark's
(P(category) = Σ of its landmarks' scores, as in ``hierarchical``), so the two always
agree. k and the temperature T are chosen on the validation split from ``k_grid`` ×
``temperatures`` (highest landmark macro F1, ties to the lower cross-entropy); values of
``k_grid`` above the number of training rows are dropped, and a grid with none left is
refused before anything is fitted.

Nothing is trained: the classifier is built in ``on_train_start`` (one read of the train
and val features, as the linear probe does) and the stage's single epoch only logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from landmark_tl.core.errors import ConfigError
from landmark_tl.core.hierarchy import TASKS, LabelHierarchy
from landmark_tl.data.datamodule import mapped_split
from landmark_tl.data.features.store import Rows, row_chunks
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.neighbours import KNNClassifier
from landmark_tl.models.strategies.base import TwoLevelStrategy
from landmark_tl.models.strategies.registry import StrategyConfig, register_strategy
from landmark_tl.models.strategies.stages import StageConfig


@dataclass
class KNNConfig(StrategyConfig):
    name: str = "knn"
    k_grid: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    temperatures: list[float] = field(default_factory=lambda: [0.03, 0.07, 0.1])


def check_grid(k_grid: Sequence[int], temperatures: Sequence[float]) -> None:
    """Refuse an empty grid, k < 1 and T <= 0 (in the strategy's argument names)."""
    if not k_grid or min(k_grid) < 1:
        raise ValueError(f"k_grid={list(k_grid)}: give one or more neighbour counts >= 1")
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"temperatures={list(temperatures)}: give one or more values > 0")


def check_k_fits(k_grid: Sequence[int], train_rows: int) -> None:
    """Refuse a grid whose every k exceeds the training rows, naming the key."""
    if min(k_grid) > train_rows:
        raise ConfigError(
            f"strategy.k_grid={list(k_grid)}: every k exceeds the {train_rows} training "
            f"images; give a k of at most {train_rows} (e.g. strategy.k_grid=[{train_rows}])"
        )


@torch.no_grad()
def split_rows(
    module: TwoLevelStrategy,
    split: str,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[Rows, dict[str, torch.Tensor]]:
    """A split's encoded features (passed through ``transform``, e.g. an embedding) and
    targets in dataset order: the stored rows when they are read from the mapped shards
    (transformed as they are read), else all of them in memory through the datamodule's
    loader (unshuffled)."""
    shuffled = getattr(module.trainer.datamodule, f"{split}_dataloader")()
    mapped = mapped_split(shuffled.dataset)
    if mapped is not None:
        rows, targets = mapped
        return (rows if transform is None else rows.transformed(transform)), targets
    loader = DataLoader(
        shuffled.dataset, batch_size=shuffled.batch_size, collate_fn=shuffled.collate_fn
    )
    xs, categories, landmarks = [torch.zeros(0)], [], []
    for x, category, landmark in loader:
        features = module.encode(x.to(module.device))
        xs.append((features if transform is None else transform(features)).float())
        categories.append(category)
        landmarks.append(landmark)
    if len(xs) == 1:
        return xs[0], {t: torch.zeros(0, dtype=torch.long) for t in TASKS}
    return torch.cat(xs[1:]), {"category": torch.cat(categories), "landmark": torch.cat(landmarks)}


def fit_neighbours(
    module: TwoLevelStrategy,
    knn: KNNClassifier,
    k_grid: Sequence[int],
    temperatures: Sequence[float],
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """The training split's rows (through ``transform``) become ``knn``'s neighbours; k
    and T are chosen from the grid on the validation split (:func:`split_rows`)."""
    (train, y_train), (val, y_val) = (split_rows(module, s, transform) for s in ("train", "val"))
    knn.fit(
        row_chunks(train),
        y_train["landmark"],
        row_chunks(val),
        y_val["landmark"],
        k_grid,
        temperatures,
    )


class CategoryFromLandmark(TwoLevelStrategy):
    """One stage, ``landmark``, scoring both tasks: the category's log-probability is the
    log-sum of its landmarks' and the category decoded is the predicted landmark's."""

    def __init__(
        self, backbone: Backbone, hierarchy: LabelHierarchy, stages: Mapping[str, StageConfig]
    ) -> None:
        super().__init__(backbone, hierarchy, stages, ("landmark",))
        members = torch.zeros(hierarchy.num_landmarks, hierarchy.num_categories)
        members[torch.arange(hierarchy.num_landmarks), hierarchy.parent_tensor()] = 1.0
        self.register_buffer("log_membership", members.log(), persistent=False)
        self.register_buffer("parent", hierarchy.parent_tensor(), persistent=False)

    def stage_tasks(self, stage: str) -> tuple[str, ...]:
        return TASKS

    def with_categories(self, landmark: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both tasks' logits from the landmark's log-scores."""
        log_p = landmark.log_softmax(-1)
        category = torch.logsumexp(log_p[..., :, None] + self.log_membership, dim=-2)
        return {"category": category, "landmark": landmark}

    def decode(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        landmark = logits["landmark"].argmax(-1)
        return {"category": self.parent[landmark], "landmark": landmark}


@register_strategy(KNNConfig)
class KNN(CategoryFromLandmark):
    """Weighted kNN on the frozen features; no parameters, nothing optimised."""

    takes_head = False
    trains_backbone = False  # votes on frozen features only
    # Lightning's notices of what kNN does on purpose: no optimiser (configure_optimizers
    # returns None, Lightning's documented "fit without any optimizer") and a training_step
    # that only logs (no loss), as the linear probe's; filtered during fit (fit.py)
    intended_notices = (
        *CategoryFromLandmark.intended_notices,
        r"`LightningModule.configure_optimizers` returned `None`",
        r"`training_step` returned `None`",
    )

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: LabelHierarchy,
        stages: Mapping[str, StageConfig],
        *,
        k_grid: Sequence[int] = (10, 20, 50, 100),
        temperatures: Sequence[float] = (0.03, 0.07, 0.1),
    ) -> None:
        check_grid(k_grid, temperatures)
        if not backbone.frozen:
            raise ValueError("kNN votes on frozen features: set backbone.freeze=all")
        super().__init__(backbone, hierarchy, stages)
        self.k_grid, self.temperatures = tuple(k_grid), tuple(temperatures)
        self.knn = KNNClassifier(hierarchy.num_landmarks, backbone.num_features)

    def check_split_sizes(self, sizes: Mapping[str, int]) -> None:
        check_k_fits(self.k_grid, sizes["train"])

    def task_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.with_categories(self.knn(features))

    def trainable_in_stage(self, stage: str) -> list[nn.Module]:
        return []

    def averaged_weights(self, stage: str) -> dict[str, torch.Tensor]:
        return {}  # nothing is stepped: there is no average of weights

    def configure_optimizers(self) -> None:
        """Nothing to optimise: Lightning runs the epoch with its placeholder optimiser, whose
        steps count, so the epoch's checkpoint is kept (manual optimisation with no
        optimiser would count none, and Lightning would then save no checkpoint)."""
        return None

    def on_train_start(self) -> None:
        fit_neighbours(self, self.knn, self.k_grid, self.temperatures)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Log the training scores of the fitted classifier (no loss: no update)."""
        with torch.no_grad():
            self._step(batch, "train")

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_dict({"knn/k": self.knn.k.float(), "knn/temperature": self.knn.temperature})
