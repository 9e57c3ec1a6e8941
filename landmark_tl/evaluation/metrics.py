"""Per-task scores: the study's macro F1, accuracy, top-k accuracy and GAP."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassF1Score

ArrayLike = Any  # a sequence, numpy array or tensor of class indices


def class_counts(
    preds: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: right predictions, predictions and targets (each a (C,) count)."""
    preds, targets = preds.long(), targets.long()
    return (
        torch.bincount(targets[preds == targets], minlength=num_classes),
        torch.bincount(preds, minlength=num_classes),
        torch.bincount(targets, minlength=num_classes),
    )


class _ClassCounts(Metric):
    """Streaming per-class counts: O(classes) memory and time per update.

    Own update, not torchmetrics' MulticlassStatScores.update: it bins a C×C confusion
    matrix for every batch, 10⁸ cells at 10k landmarks (measured: ~2 s per batch on 2 cores).
    """

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        for name in ("hits", "predicted", "actual"):
            zeros = torch.zeros(num_classes, dtype=torch.long)
            self.add_state(name, default=zeros, dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Count a batch of predicted classes (or (N, C) scores: their argmax)."""
        if preds.ndim == targets.ndim + 1:
            preds = preds.argmax(dim=1)
        hits, predicted, actual = class_counts(preds, targets, self.num_classes)
        self.hits += hits
        self.predicted += predicted
        self.actual += actual


class MacroF1(MulticlassF1Score):
    """torchmetrics' macro F1 (its state, reduction across processes and compute: per
    class 2·TP / (2·TP + FP + FN), classes in neither preds nor targets left out of the
    mean, as sklearn), with the per-class counts of :class:`_ClassCounts` as its update."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, average="macro", validate_args=False, **kwargs)

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Count a batch of predicted classes (or (N, C) scores: their argmax)."""
        if preds.ndim == targets.ndim + 1:
            preds = preds.argmax(dim=1)
        hits, predicted, actual = class_counts(preds, targets, self.num_classes)
        wrong = predicted + actual - hits
        self._update_state(hits, predicted - hits, len(targets) - wrong, actual - hits)


def macro_f1(preds: ArrayLike, targets: ArrayLike, num_classes: int | None = None) -> float:
    """Macro F1 of integer predictions against targets (:class:`MacroF1`); ``num_classes``
    defaults to the largest label + 1."""
    preds, targets = torch.as_tensor(preds).long(), torch.as_tensor(targets).long()
    if num_classes is None:
        num_classes = int(max(preds.max(), targets.max())) + 1
    metric = MacroF1(num_classes, sync_on_compute=False)  # this process's labels only
    metric.update(preds, targets)
    return float(metric.compute())


class Accuracy(_ClassCounts):
    """Streaming (micro) accuracy."""

    def compute(self) -> torch.Tensor:
        return self.hits.sum() / self.actual.sum().clamp(min=1)


def task_metrics(num_classes: int) -> MetricCollection:
    """Streaming macro F1 and accuracy for one task, for logging during training."""
    return MetricCollection({"f1": MacroF1(num_classes), "acc": Accuracy(num_classes)})


TOP_K = 5


def score_predictions(
    preds: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    probs: torch.Tensor | None = None,
) -> dict[str, float]:
    """Macro F1 (as sklearn: classes in neither preds nor targets are left out), accuracy;
    with the (N, C) class probabilities also top-5 accuracy and GAP."""
    scores = {
        "macro_f1": macro_f1(preds, targets, num_classes),
        "accuracy": float((preds.long() == targets.long()).sum() / max(len(targets), 1)),
    }
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
