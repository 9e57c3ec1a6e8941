"""Per-task scores: the study's macro F1, accuracy, top-k accuracy and GAP."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric, MetricCollection

from landmark_tl.evaluation.counts import ClassCounts, class_counts, macro_f1_from_counts
from landmark_tl.evaluation.registry import TaskMetric, registered_metrics, scores_from_counts

ArrayLike = Any  # a sequence, numpy array or tensor of class indices


class CountedMetric(Metric):
    """A registered task metric (:mod:`landmark_tl.evaluation.registry`) as a streaming
    torchmetrics ``Metric``: per-class counts as its state (summed across processes),
    O(classes) memory and time per update, the registry's function of them as its compute.

    Own update and compute rather than torchmetrics' ``MulticlassF1Score``: the counts and
    the formula are the ones the bootstrap and the heads launcher use (batched, which
    torchmetrics' metrics are not), so all three agree by construction.
    """

    full_state_update = False

    def __init__(self, metric: TaskMetric, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = metric
        self.num_classes = num_classes
        for name in ClassCounts._fields:
            zeros = torch.zeros(num_classes, dtype=torch.long)
            self.add_state(name, default=zeros, dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Count a batch of predicted classes (or (N, C) scores: their argmax)."""
        if preds.ndim == targets.ndim + 1:
            preds = preds.argmax(dim=1)
        counts = class_counts(preds, targets, self.num_classes)
        self.hits += counts.hits
        self.predicted += counts.predicted
        self.actual += counts.actual

    def compute(self) -> torch.Tensor:
        """The metric of the counts so far, as a float32 value (what Lightning logs)."""
        return self.metric.from_counts(ClassCounts(self.hits, self.predicted, self.actual)).float()


def macro_f1(preds: ArrayLike, targets: ArrayLike, num_classes: int | None = None) -> float:
    """Macro F1 of integer predictions against targets (classes in neither are left out, as
    sklearn); ``num_classes`` defaults to the largest label + 1."""
    preds, targets = torch.as_tensor(preds).long(), torch.as_tensor(targets).long()
    if num_classes is None:
        num_classes = int(max(preds.max(), targets.max())) + 1
    return float(macro_f1_from_counts(class_counts(preds, targets, num_classes)))


def task_metrics(num_classes: int) -> MetricCollection:
    """Every registered task metric of one task (macro F1, accuracy ...), streaming, for
    logging during training; keyed by their log names."""
    return MetricCollection({m.name: CountedMetric(m, num_classes) for m in registered_metrics()})


TOP_K = 5


def score_predictions(
    preds: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    probs: torch.Tensor | None = None,
) -> dict[str, float]:
    """Every registered task metric by its metrics.json field (macro F1: classes in neither
    preds nor targets are left out, as sklearn; accuracy ...); with the (N, C) class
    probabilities also top-5 accuracy and GAP."""
    counts = class_counts(preds, targets, num_classes)
    scores = {field: float(value) for field, value in scores_from_counts(counts).items()}
    if probs is not None:
        confidence = probs.gather(1, preds.long()[:, None])[:, 0]
        scores[f"top{TOP_K}_accuracy"] = top_k_accuracy(probs, targets, TOP_K)
        scores["gap"] = global_average_precision(preds, confidence, targets)
    scores["n"] = int(len(targets))
    return scores


def top_k_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable (k capped at C).

    Own code: torchmetrics' top-k accuracy goes through (N, C) one-hot statistics, which
    costs 10⁸ cells for 10k test images of 10k classes; ``topk`` needs (N, k).
    """
    if len(targets) == 0:
        return float("nan")
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    return float((top == targets[:, None]).any(dim=1).float().mean())


def global_average_precision(
    preds: torch.Tensor, confidence: torch.Tensor, targets: torch.Tensor
) -> float:
    """GAP (micro-averaged average precision) as in the GLDv2 recognition challenge.

    One prediction per image with its confidence; ranked by confidence, highest first,
    GAP = (1/M) Σ_i P(i)·rel(i), with P(i) the precision of the first i predictions,
    rel(i) = 1 when prediction i is right, and M the number of images (all have a label).
    """
    if len(targets) == 0:
        return float("nan")
    order = torch.argsort(confidence.double(), descending=True, stable=True)
    right = (preds[order] == targets[order]).double()
    precision = right.cumsum(0) / torch.arange(1, len(right) + 1, dtype=torch.float64)
    return float((precision * right).sum() / len(targets))


def hierarchy_scores(
    preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], parent: torch.Tensor
) -> dict[str, float]:
    """Scores of the two predictions together, per test image.

    ``parent[l]`` is the category of landmark ``l``. Full-path accuracy: both tasks right;
    consistency: the predicted landmark lies in the predicted category; category F1 from
    the landmark: macro F1 of the predicted landmark's category.
    """
    category, landmark = preds["category"], preds["landmark"]
    implied = parent[landmark]
    both_right = (category == targets["category"]) & (landmark == targets["landmark"])
    return {
        "full_path_accuracy": float(both_right.float().mean()),
        "consistency": float((implied == category).float().mean()),
        "category_f1_from_landmark": macro_f1(implied, targets["category"], int(parent.max()) + 1),
    }
