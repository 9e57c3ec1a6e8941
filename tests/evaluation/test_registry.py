"""A new task metric is one registry entry: logged, in metrics.json, a monitor, batched."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from landmark_tl.evaluation.counts import ClassCounts, class_counts
from landmark_tl.evaluation.metrics import score_predictions, task_metrics
from landmark_tl.evaluation.registry import (
    TASK_METRICS,
    TaskMetric,
    field_of,
    label_of,
    metric_names,
    register_task_metric,
)
from landmark_tl.reporting.plots import monitored_quantity
from landmark_tl.runs.rundir import Run
from landmark_tl.sweep.grouping import batched_monitors
from landmark_tl.sweep.vectorised import _member_scores
from tests.conftest import TINY_OVERRIDES, compose_config


def balanced_accuracy(counts: ClassCounts) -> torch.Tensor:
    """Mean recall over the classes with targets (a toy metric for these tests)."""
    present = counts.actual > 0
    recall = counts.hits.double() / counts.actual.clamp(min=1)
    return recall.sum(-1) / present.sum(-1).clamp(min=1)


@pytest.fixture
def toy_metric() -> Iterator[TaskMetric]:
    """The toy metric registered for one test (the one step a user takes), then removed."""
    metric = register_task_metric(
        TaskMetric("bacc", "balanced_accuracy", "balanced accuracy", balanced_accuracy)
    )
    yield metric
    del TASK_METRICS[metric.name]


def test_the_built_in_metrics_keep_their_logged_names_and_fields():
    assert metric_names() == ("f1", "acc")
    assert (field_of("f1"), field_of("acc"), field_of("loss")) == ("macro_f1", "accuracy", None)
    assert (label_of("f1"), label_of("acc")) == ("macro F1", "accuracy")


def test_a_registered_metric_reaches_every_reader(toy_metric):
    preds, targets = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0])
    # recall: class 0 1/2, class 1 1/2, class 2 2/2
    expected = (0.5 + 0.5 + 1.0) / 3
    assert metric_names() == ("f1", "acc", "bacc")
    scores = score_predictions(preds, targets, 4)
    assert list(scores) == ["macro_f1", "accuracy", "balanced_accuracy", "n"]
    assert scores["balanced_accuracy"] == pytest.approx(expected)
    streamed = task_metrics(4)
    streamed.update(preds, targets)
    assert float(streamed.compute()["bacc"]) == pytest.approx(expected)
    members = _member_scores({"landmark": class_counts(preds[None], targets[None], 4)})
    assert float(members["landmark"]["bacc"][0]) == pytest.approx(expected)
    assert "val/bacc" in batched_monitors()  # the heads launcher keeps members by it
    assert (monitored_quantity("val/landmark_bacc"), label_of("bacc")) == (
        "bacc",
        "balanced accuracy",
    )
    val = {"landmark": {"balanced_accuracy": 0.25}, "category": {"balanced_accuracy": 0.75}}
    run = Run(Path("run"), {"val": val}, None)
    assert run.val_score("val/landmark_bacc") == 0.25
    assert run.val_score("val/bacc") == 0.5


def test_a_metric_whose_name_or_field_is_taken_is_refused():
    with pytest.raises(ValueError, match="'f1'.*taken"):
        register_task_metric(TaskMetric("f1", "f1_again", "F1", balanced_accuracy))
    with pytest.raises(ValueError, match="field 'accuracy'.*taken"):
        register_task_metric(TaskMetric("acc2", "accuracy", "accuracy", balanced_accuracy))
    with pytest.raises(ValueError, match="no '_'"):
        register_task_metric(TaskMetric("b_acc", "b_accuracy", "accuracy", balanced_accuracy))
    assert metric_names() == ("f1", "acc")


@pytest.mark.slow
def test_a_run_logs_records_and_monitors_a_registered_metric(toy_metric, tiny_tree, tmp_path):
    from landmark_tl.training.run import train

    config = compose_config(
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "strategy.monitor=val/landmark_bacc",
    )
    train(config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("test", "val"):
        for task in ("category", "landmark"):
            assert 0.0 <= metrics[split][task]["balanced_accuracy"] <= 1.0
    assert metrics["stages"][0]["monitor"] == "val/landmark_bacc"
    with open(next((tmp_path / "run").rglob("metrics.csv"))) as f:
        header = next(csv.reader(f))
    assert {"val/bacc", "val/landmark_bacc", "train/category_bacc"} <= set(header)
    from landmark_tl.serving.evaluate import evaluate
    from landmark_tl.serving.inference import load_run

    run = load_run(tmp_path / "run")
    again = evaluate(run)["test"]["landmark"]["balanced_accuracy"]
    assert again == pytest.approx(metrics["test"]["landmark"]["balanced_accuracy"])
