"""The one counting kernel: every macro F1 of the package equals sklearn's definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score

from landmark_tl.evaluation.counts import (
    accuracy_from_counts,
    class_counts,
    macro_f1_from_counts,
)
from landmark_tl.evaluation.metrics import macro_f1, score_predictions, task_metrics
from landmark_tl.evaluation.stats import batched_macro_f1
from landmark_tl.sweep.vectorised import _member_scores


def sklearn_macro_f1(preds: list[int], targets: list[int]) -> float:
    """sklearn's ``f1_score(targets, preds, average="macro", zero_division=0)``, written
    out: the mean over the labels present in either list of 2·TP / (2·TP + FP + FN)."""
    labels = sorted(set(preds) | set(targets))
    if not labels:
        return 0.0
    f1 = []
    for c in labels:
        tp = sum(p == t == c for p, t in zip(preds, targets, strict=True))
        fp = sum(p == c != t for p, t in zip(preds, targets, strict=True))
        fn = sum(t == c != p for p, t in zip(preds, targets, strict=True))
        f1.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1) / len(labels)


# (preds, targets, classes, macro F1 by hand)
HAND_MADE = [
    # class 0: tp 1, fp 1 -> 2/3; class 1: tp 2, fn 1 -> 4/5
    ([0, 0, 1, 1], [0, 1, 1, 1], 2, (2 / 3 + 4 / 5) / 2),
    # the same with classes 2..4 in neither list: left out of the mean
    ([0, 0, 1, 1], [0, 1, 1, 1], 5, (2 / 3 + 4 / 5) / 2),
    # class 2 only predicted (F1 0) and class 1 only true (F1 0) both count
    ([0, 2], [0, 1], 4, (1 + 0 + 0) / 3),
    # every prediction wrong
    ([1, 0], [0, 1], 2, 0.0),
    # all right, one class
    ([3, 3, 3], [3, 3, 3], 7, 1.0),
]


@pytest.mark.parametrize(("preds", "targets", "classes", "expected"), HAND_MADE)
def test_every_macro_f1_equals_sklearn_on_hand_made_cases(preds, targets, classes, expected):
    assert sklearn_macro_f1(preds, targets) == pytest.approx(expected)
    p, t = torch.tensor(preds), torch.tensor(targets)
    # the one-shot score, the Lightning metric, the bootstrap's rows, the heads' members
    assert macro_f1(p, t, classes) == pytest.approx(expected, abs=1e-12)
    assert score_predictions(p, t, classes)["macro_f1"] == pytest.approx(expected, abs=1e-12)
    streamed = task_metrics(classes)
    for i in range(len(preds)):  # one label per update: the counts add up
        streamed.update(p[i : i + 1], t[i : i + 1])
    assert float(streamed.compute()["f1"]) == pytest.approx(expected, abs=1e-6)
    rows = batched_macro_f1(np.array([preds, preds]), np.array([targets, targets]), classes)
    assert rows.dtype == np.float64
    assert rows.tolist() == pytest.approx([expected, expected], abs=1e-12)
    members = _member_scores({"landmark": class_counts(p[None], t[None], classes)})
    assert float(members["landmark"]["f1"][0]) == pytest.approx(expected, abs=1e-6)


def test_batched_counts_equal_row_by_row_counts_and_torchmetrics():
    rng = np.random.default_rng(0)
    classes = 9
    targets = rng.integers(0, 6, (2, 3, 40))  # classes 6..8 in no target
    preds = np.where(rng.random(targets.shape) < 0.5, targets, rng.integers(0, 8, targets.shape))
    counts = class_counts(torch.from_numpy(preds), torch.from_numpy(targets), classes)
    assert all(kind.shape == (2, 3, classes) for kind in counts)
    f1 = macro_f1_from_counts(counts)
    assert f1.shape == (2, 3) and f1.dtype == torch.float64
    reference = MulticlassF1Score(classes, average="macro")
    for i in range(2):
        for j in range(3):
            p, t = preds[i, j].tolist(), targets[i, j].tolist()
            one = class_counts(torch.tensor(p), torch.tensor(t), classes)
            for batched, single in zip(counts, one, strict=True):
                assert torch.equal(batched[i, j], single)
            assert float(f1[i, j]) == pytest.approx(sklearn_macro_f1(p, t), abs=1e-12)
            expected = float(reference(torch.tensor(p), torch.tensor(t)))
            assert float(f1[i, j]) == pytest.approx(expected, abs=1e-6)
            accuracy = float(accuracy_from_counts(counts)[i, j])
            assert accuracy == pytest.approx(np.mean(preds[i, j] == targets[i, j]))


def test_counts_by_hand_and_a_row_without_labels():
    counts = class_counts(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 4)
    assert counts.hits.tolist() == [1, 1, 1, 0]
    assert counts.predicted.tolist() == [1, 2, 1, 0]
    assert counts.actual.tolist() == [1, 1, 2, 0]
    empty = class_counts(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0), 3)
    assert macro_f1_from_counts(empty).tolist() == [0.0, 0.0]
    assert accuracy_from_counts(empty).tolist() == [0.0, 0.0]
