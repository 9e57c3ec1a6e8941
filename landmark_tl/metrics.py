"""Per-task scores: the study's macro F1, accuracy, top-k accuracy and GAP."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score


def task_metrics(num_classes: int) -> MetricCollection:
    """Streaming macro F1 and accuracy for one task, for logging during training."""
    return MetricCollection(
        {
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "acc": MulticlassAccuracy(num_classes, average="micro"),
        }
    )


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
        "macro_f1": float(multiclass_f1_score(preds, targets, num_classes, average="macro")),
        "accuracy": float(multiclass_accuracy(preds, targets, num_classes, average="micro")),
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
        "category_f1_from_landmark": float(
            multiclass_f1_score(
                implied, targets["category"], int(parent.max()) + 1, average="macro"
            )
        ),
    }
