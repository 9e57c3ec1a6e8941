"""Hierarchy-aware scores on hand-made predictions, in metrics.json and in the report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from landmark_tl.evaluation.hierarchy_metrics import (
    hierarchy_aware_scores,
    mistake_severity,
    ranked_landmarks,
    tree_distance,
)
from landmark_tl.reporting.render import markdown_table
from landmark_tl.reporting.report import summarise
from landmark_tl.reporting.report_latex import latex_table
from landmark_tl.runs.rundir import collect_runs
from tests.reporting.test_report import LANDMARKS, PATHS, TRUTH, make_run, wrong_first

# 2 categories: landmarks 0, 1 in category 0; 2, 3 in category 1
PARENT = torch.tensor([0, 0, 1, 1])


def test_tree_distance_is_the_height_of_the_lowest_common_ancestor():
    a = torch.tensor([0, 0, 0, 3])
    b = torch.tensor([0, 1, 2, 0])
    assert tree_distance(a, b, PARENT).tolist() == [0, 1, 2, 2]


def test_mistake_severity_and_distance_at_k_by_hand():
    targets = torch.tensor([0, 0, 2, 3])
    preds = torch.tensor([0, 1, 0, 3])  # right, same category (1), other category (2), right
    probs = torch.tensor(
        [
            [0.7, 0.1, 0.15, 0.05],  # ranked 0, 2, 1 -> distances 0, 2, 1
            [0.2, 0.5, 0.2, 0.1],  # ranked 1, then 0 and 2 tie at 0.2
            [0.4, 0.1, 0.3, 0.2],  # ranked 0, 2, 3 -> 2, 0, 1
            [0.1, 0.1, 0.3, 0.5],  # ranked 3, 2, then 0/1 -> 0, 1, 2
        ]
    )
    assert mistake_severity(preds, targets, PARENT) == pytest.approx((1 + 2) / 2)
    scores = hierarchy_aware_scores(preds, targets, PARENT, probs, ks=(1, 3))
    assert scores["mistake_severity"] == pytest.approx(1.5)
    assert scores["hierarchical_distance_at_1"] == pytest.approx((0 + 1 + 2 + 0) / 4)
    top3 = ranked_landmarks(preds, probs, 3)
    assert top3[0].tolist() == [0, 2, 1] and top3[2].tolist() == [0, 2, 3]
    # image 1: 1 (d1), then {0, 2} (d0, d2): mean 1 whichever tie order
    expected = [(0 + 2 + 1) / 3, (1 + 0 + 2) / 3, (2 + 0 + 1) / 3, (0 + 1 + 2) / 3]
    assert scores["hierarchical_distance_at_3"] == pytest.approx(sum(expected) / 4)


def test_the_prediction_ranks_first_even_when_not_the_most_probable():
    # a top-down decode may predict landmark 1 although landmark 2 is more probable
    ranked = ranked_landmarks(torch.tensor([1]), torch.tensor([[0.1, 0.3, 0.6, 0.0]]), 2)
    assert ranked.tolist() == [[1, 2]]


def test_no_mistakes_gives_a_nan_severity_and_zero_distance():
    targets = torch.tensor([1, 2])
    scores = hierarchy_aware_scores(targets, targets, PARENT, ks=(1, 5))
    assert math.isnan(scores["mistake_severity"])
    assert scores["hierarchical_distance_at_1"] == 0.0
    assert "hierarchical_distance_at_5" not in scores  # needs probabilities


def write_distances(run_dir: Path, pred: list[str]) -> None:
    """Add the per-image distance columns train.py writes to a fake run's predictions."""
    path = run_dir / "predictions.csv"
    rows = list(csv.reader(path.open(encoding="utf-8")))
    rows[0] += ["landmark_distance_at_1", "landmark_distance_at_5"]
    index = {name: i for i, name in enumerate(LANDMARKS)}
    parent = [0, 0, 1, 1]
    for row, t, p in zip(rows[1:], TRUTH, pred, strict=True):
        a, b = index[t], index[p]
        d = 0 if a == b else 1 if parent[a] == parent[b] else 2
        row += [str(d), "1.0"]
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def test_the_report_bootstraps_severity_and_compares_with_the_probe(tmp_path: Path):
    # wrong_first gives each landmark's first k images to a landmark of the other category
    near = [
        LANDMARKS[i // 5 ^ 1] if i % 5 < 2 else LANDMARKS[i // 5] for i in range(len(TRUTH))
    ]  # wrong into the same category: severity 1
    runs = {("near", s): near for s in (0, 1)} | {
        ("linear_probe", s): wrong_first(2) for s in (0, 1)
    }
    for n, ((approach, seed), pred) in enumerate(runs.items()):
        run_dir = make_run(tmp_path, str(n), approach, seed, pred, PATHS)
        write_distances(run_dir, pred)
    make_run(tmp_path, "old", "no_columns", 0, TRUTH)  # an older run: left out of the section
    table = summarise(collect_runs([tmp_path])[0], bootstrap=300)
    near_row, probe_row = table.mistakes["near"], table.mistakes["linear_probe"]
    assert "no_columns" not in table.mistakes
    assert near_row["mistake_severity"].mean == pytest.approx(1.0)
    assert probe_row["mistake_severity"].mean == pytest.approx(2.0)
    assert near_row["hierarchical_distance_at_1"].mean == pytest.approx(8 / 20)
    assert near_row["hierarchical_distance_at_5"].mean == pytest.approx(1.0)
    diff, low, high, p = near_row["mistake_severity"].vs_probe
    assert diff == pytest.approx(-1.0) and high < 0 and p <= 0.05
    assert near_row["mistake_severity"].verdict == "< probe"
    assert probe_row["mistake_severity"].vs_probe is None
    markdown = markdown_table(table)
    assert "How bad the mistakes are" in markdown and "Mistake severity" in markdown
    assert "-1.000 [-1.000, -1.000] < probe" in markdown
    latex = latex_table(table)
    assert latex.count(r"\begin{table}") == 2 and r"\label{tab:mistakes}" in latex
    assert r"near & 0.600 & 1.000 & [1.000, 1.000] & -1.000 [-1.000, -1.000] $<$ probe" in latex


def test_metrics_json_and_predictions_hold_the_scores(trained: Path):
    hierarchy = json.loads((trained / "metrics.json").read_text())["hierarchy"]
    rows = list(csv.DictReader((trained / "predictions.csv").open(encoding="utf-8")))
    at1 = [float(r["landmark_distance_at_1"]) for r in rows]
    assert hierarchy["hierarchical_distance_at_1"] == pytest.approx(sum(at1) / len(at1), abs=1e-3)
    wrong = [d for d in at1 if d > 0]
    if wrong:
        assert hierarchy["mistake_severity"] == pytest.approx(sum(wrong) / len(wrong), abs=1e-3)
    # 4 landmarks: distance@5 covers all of them, 0 + 1 + 2 + 2 over 4
    at5 = {float(r["landmark_distance_at_5"]) for r in rows}
    assert at5 == {1.25}
    assert hierarchy["hierarchical_distance_at_5"] == pytest.approx(1.25)


def test_evaluate_recomputes_the_same_scores(trained: Path):
    from landmark_tl.serving.evaluate import evaluate
    from landmark_tl.serving.inference import load_run

    run = load_run(trained)
    hierarchy = evaluate(run)["hierarchy"]
    for key in ("hierarchical_distance_at_1", "hierarchical_distance_at_5"):
        assert hierarchy[key] == pytest.approx(run.metrics["hierarchy"][key], abs=1e-4)
