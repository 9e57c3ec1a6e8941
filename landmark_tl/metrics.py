"""Per-task scores: the study's macro F1, and accuracy."""

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


def score_predictions(
    preds: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Macro F1 (as sklearn: classes in neither preds nor targets are left out), accuracy."""
    return {
        "macro_f1": float(multiclass_f1_score(preds, targets, num_classes, average="macro")),
        "accuracy": float(multiclass_accuracy(preds, targets, num_classes, average="micro")),
        "n": int(len(targets)),
    }


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
