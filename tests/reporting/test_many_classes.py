"""10k landmarks: report, plots and evaluation stay fast and readable (synthetic predictions)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.reporting.plots import most_confused_pairs, write_run_plots
from landmark_tl.reporting.report import summarise
from landmark_tl.runs.rundir import collect_runs
from landmark_tl.serving.evaluate import score_named_predictions
from landmark_tl.serving.inference import Prediction
from landmark_tl.serving.predict import predictions_csv

CATEGORIES, PER_CATEGORY, PER_LANDMARK = 100, 100, 2  # 10k landmarks, 20k test images


@pytest.fixture(scope="module")
def hierarchy() -> LabelHierarchy:
    return LabelHierarchy.from_pairs(
        (f"c{c:03d}", f"l{c:03d}_{i:03d}") for c in range(CATEGORIES) for i in range(PER_CATEGORY)
    )


def _run(root: Path, hierarchy: LabelHierarchy, seed: int) -> tuple[Path, list[str], list[str]]:
    """A run dir whose test predictions are right for ~70% of 20k images of 10k landmarks."""
    rng = np.random.default_rng(seed)
    names = hierarchy.landmark_names
    true = np.repeat(np.arange(len(names)), PER_LANDMARK)
    pred = np.where(rng.random(len(true)) < 0.7, true, rng.integers(0, len(names), len(true)))
    run_dir = root / f"run{seed}"
    run_dir.mkdir(parents=True)
    with open(run_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["path"]
            + [f"{c}_{t}" for t in ("category", "landmark") for c in ("true", "pred", "prob")]
        )
        for i, (t, p) in enumerate(zip(true, pred, strict=True)):
            tc, pc = names[t].split("/")[0], names[p].split("/")[0]
            writer.writerow([f"img{i:05d}.jpg", tc, pc, 0.9, names[t], names[p], 0.8])
    (run_dir / "hierarchy.json").write_text(json.dumps(hierarchy.to_dict()))
    metrics = {"approach": "A", "strategy": "multi_output", "seed": seed, "data": {"root": "/d"}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir, [names[t] for t in true], [names[p] for p in pred]


def test_plots_and_report_at_10k_classes(hierarchy, tmp_path):
    runs = [_run(tmp_path, hierarchy, seed) for seed in (0, 1)]
    start = time.perf_counter()
    written = write_run_plots(runs[0][0])
    plot_seconds = time.perf_counter() - start
    assert sorted(p.name for p in written) == ["confusion_category.png", "confusion_landmark.png"]
    assert all(p.stat().st_size < 500_000 for p in written)  # pairs, not a 10k x 10k image
    start = time.perf_counter()
    table = summarise(collect_runs([tmp_path])[0], bootstrap=500)
    report_seconds = time.perf_counter() - start
    [row] = table.rows
    assert 0.6 < row.scores["landmark"].mean < 0.8
    print(f"plots: {plot_seconds:.2f} s, report: {report_seconds:.2f} s")
    assert plot_seconds < 20 and report_seconds < 30, (plot_seconds, report_seconds)


def test_most_confused_pairs_are_counted_and_ranked():
    true = ["a", "a", "a", "b", "b", "c"]
    pred = ["b", "b", "a", "a", "c", "c"]
    assert most_confused_pairs(true, pred, top=2) == [("a", "b", 2), ("b", "a", 1)]


def test_evaluate_and_predict_outputs_at_10k_classes(hierarchy):
    names = hierarchy.landmark_names
    rng = np.random.default_rng(0)
    targets = torch.tensor(np.repeat(np.arange(len(names)), PER_LANDMARK))
    predictions = [
        Prediction(
            f"img{i}.jpg",
            hierarchy.category_names[0],
            0.5,
            names[(t + (i % 3 == 0)) % len(names)],
            float(rng.random()),
            top_landmarks=[
                (names[(t + (i % 3 == 0)) % len(names)], 0.5),
                (names[t if i % 6 == 0 else (t + 2) % len(names)], 0.2),
            ],
        )
        for i, t in enumerate(targets.tolist())
    ]
    start = time.perf_counter()
    preds, scores = score_named_predictions("landmark", predictions, targets, names)
    csv_text = predictions_csv(predictions, top_k=5)
    seconds = time.perf_counter() - start
    assert scores["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["top5_accuracy"] == pytest.approx(2 / 3 + 1 / 6, abs=1e-3)
    assert 0 < scores["gap"] < scores["accuracy"] + 1e-9 and scores["n"] == 20_000
    assert len(csv_text.splitlines()) == 20_001 and preds.shape == (20_000,)
    print(f"evaluate + predict CSV: {seconds:.2f} s")
    assert seconds < 10, seconds
