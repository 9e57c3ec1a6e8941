"""Scores on hand-made predictions equal hand-computed values."""

from __future__ import annotations

import pytest
import torch

from landmark_tl.evaluation.metrics import (
    global_average_precision,
    hierarchy_scores,
    score_predictions,
    task_metrics,
    top_k_accuracy,
)


def test_macro_f1_and_accuracy_by_hand():
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    # class 0: tp 1, fp 1, fn 1 -> F1 1/2; class 1: tp 2, fp 1, fn 0 -> 4/5;
    # class 2: tp 1, fp 0, fn 1 -> 2/3
    scores = score_predictions(preds, targets, 3)
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["n"] == 6


def test_classes_absent_from_preds_and_targets_are_left_out_of_the_mean():
    scores = score_predictions(torch.tensor([0, 1]), torch.tensor([0, 1]), 5)
    assert scores["macro_f1"] == pytest.approx(1.0)


def test_a_class_never_predicted_counts_as_zero():
    scores = score_predictions(torch.tensor([0, 0]), torch.tensor([0, 1]), 2)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_streaming_metrics_match_the_one_shot_scores():
    torch.manual_seed(0)
    logits = torch.randn(50, 4)
    targets = torch.randint(0, 4, (50,))
    metrics = task_metrics(4)
    for chunk in range(0, 50, 16):
        metrics.update(logits[chunk : chunk + 16], targets[chunk : chunk + 16])
    streamed = {k: float(v) for k, v in metrics.compute().items()}
    once = score_predictions(logits.argmax(-1), targets, 4)
    assert streamed["f1"] == pytest.approx(once["macro_f1"])
    assert streamed["acc"] == pytest.approx(once["accuracy"])


def test_hierarchy_scores_by_hand():
    parent = torch.tensor([0, 0, 1, 1])  # landmarks 0, 1 in category 0; 2, 3 in category 1
    targets = {"category": torch.tensor([0, 0, 1, 1]), "landmark": torch.tensor([0, 1, 2, 3])}
    preds = {"category": torch.tensor([0, 1, 1, 1]), "landmark": torch.tensor([0, 1, 3, 0])}
    scores = hierarchy_scores(preds, targets, parent)
    # image 0 both right; 1 category wrong; 2 landmark wrong; 3 landmark wrong
    assert scores["full_path_accuracy"] == pytest.approx(1 / 4)
    # implied categories 0, 0, 1, 0 vs predicted 0, 1, 1, 1: images 0 and 2 consistent
    assert scores["consistency"] == pytest.approx(2 / 4)
    # implied 0,0,1,0 vs true 0,0,1,1: class 0 tp2 fp1 -> 4/5; class 1 tp1 fn1 -> 2/3
    assert scores["category_f1_from_landmark"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_gap_ranks_predictions_by_confidence():
    # ranked by confidence: right, wrong, right, right -> (1/1 + 2/3 + 3/4) / 4 images
    preds = torch.tensor([3, 1, 2, 0])
    confidence = torch.tensor([0.7, 0.9, 0.6, 0.8])
    targets = torch.tensor([3, 1, 2, 5])
    assert global_average_precision(preds, confidence, targets) == pytest.approx(
        (1 + 2 / 3 + 3 / 4) / 4
    )
    # GAP rewards confident right answers: the same hits ranked first score 1 x 3/4
    right_first = torch.tensor([0.9, 0.8, 0.7, 0.1])
    assert global_average_precision(
        torch.tensor([1, 2, 3, 0]), right_first, torch.tensor([1, 2, 3, 9])
    ) == pytest.approx(3 / 4)


def test_top_k_accuracy_and_scores_with_probabilities():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    targets = torch.tensor([1, 2, 2])
    assert top_k_accuracy(probs, targets, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, targets, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(probs, targets, 5) == pytest.approx(1.0)  # k capped at 3 classes
    scores = score_predictions(probs.argmax(1), targets, 3, probs)
    assert scores["top5_accuracy"] == pytest.approx(1.0)
    # ranked: image 1 (0.7, right), image 2 (0.6, wrong), image 0 (0.5, wrong) -> 1/3
    assert scores["gap"] == pytest.approx(1 / 3)
