"""Run plots: learning curves from Lightning CSV logs, confusion matrices from predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark_tl.reporting.plots import confusion_matrix, write_run_plots
from landmark_tl.runs.rundir import read_epoch_metrics
from tests.reporting.test_report import LANDMARKS, PATHS, TRUTH, write_predictions, wrong_first


def write_stage_log(run_dir: Path, stage: str, epochs: int) -> Path:
    """A Lightning CSVLogger metrics.csv: val and train of an epoch on separate rows, then test."""
    values = [f"{split}/{stage}_{m}" for split in ("train", "val") for m in ("loss", "acc", "f1")]
    header = ["epoch", "step", f"test/{stage}_acc", *values, "train/loss", "val/loss"]
    path = run_dir / "logs" / stage / "metrics.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        for epoch in range(epochs):
            for split in ("val", "train"):
                row = {"epoch": epoch, "step": 5 * epoch + 4, f"{split}/loss": 2.0 - epoch / 10}
                row |= {f"{split}/{stage}_{m}": 0.1 * epoch for m in ("acc", "f1")}
                writer.writerow(row | {f"{split}/{stage}_loss": 1.0})
        writer.writerow({"epoch": epochs, "step": 5 * epochs, f"test/{stage}_acc": 0.7})
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A two-stage run (category, then landmark) with predictions and hierarchy.json."""
    run = tmp_path / "run"
    write_stage_log(run, "category", epochs=4)
    write_stage_log(run, "landmark", epochs=6)
    write_predictions(run, TRUTH, wrong_first(2), PATHS)
    pairs = [name.split("/") for name in LANDMARKS]
    (run / "hierarchy.json").write_text(
        json.dumps({"categories": sorted({c for c, _ in pairs}), "landmarks": pairs})
    )
    return run


def test_epoch_metrics_merge_train_and_val_rows(run_dir: Path) -> None:
    series = read_epoch_metrics(run_dir / "logs" / "landmark" / "metrics.csv")
    assert set(series) == {
        f"{split}/{name}"
        for split in ("train", "val")
        for name in ("loss", "landmark_loss", "landmark_acc", "landmark_f1")
    }
    assert series["val/loss"] == {e: pytest.approx(2.0 - e / 10) for e in range(6)}
    assert series["train/landmark_acc"][3] == pytest.approx(0.3)


def test_write_run_plots_one_per_stage_and_task(run_dir: Path) -> None:
    written = write_run_plots(run_dir)
    assert sorted(p.name for p in written) == [
        "confusion_category.png",
        "confusion_landmark.png",
        "curves_category.png",
        "curves_landmark.png",
    ]
    for path in written:
        assert path.parent == run_dir / "plots"
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 300


def test_missing_predictions_still_plot_curves(run_dir: Path) -> None:
    (run_dir / "predictions.csv").unlink()
    written = write_run_plots(run_dir)
    assert sorted(p.name for p in written) == ["curves_category.png", "curves_landmark.png"]


def test_confusion_matrix_counts() -> None:
    names = ["a", "b", "c"]
    matrix = confusion_matrix(["a", "a", "b", "c", "c", "c"], ["a", "b", "b", "a", "c", "c"], names)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError, match="'z'"):
        confusion_matrix(["a"], ["z"], names)


def test_confusion_matrix_of_the_fake_run() -> None:
    matrix = confusion_matrix(TRUTH, wrong_first(2), LANDMARKS)
    # each landmark: 3 of 5 right, 2 given to its partner in the other category
    expected = 3 * np.eye(4, dtype=int)
    expected[[0, 1, 2, 3], [2, 3, 0, 1]] = 2
    np.testing.assert_array_equal(matrix, expected)


def test_the_chosen_checkpoint_is_marked_not_drawn_as_an_epoch(tmp_path: Path) -> None:
    """The re-validation row after training (epoch 4 of a 4-epoch stage) repeats epoch 1's
    validation: the curves end at epoch 3 and a line marks epoch 1."""
    from landmark_tl.reporting.plots import curves_figure, split_revalidation

    path = write_stage_log(tmp_path, "landmark", epochs=4)
    rows = list(csv.DictReader(path.open()))
    rows.insert(-1, {"epoch": "4", "step": "20", "val/loss": "1.9", "val/landmark_acc": "0.1"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    series = read_epoch_metrics(path)
    assert max(series["val/loss"]) == 4  # the logger files it as one more epoch
    kept, chosen = split_revalidation(series)
    assert chosen == 1 and max(kept["val/loss"]) == max(kept["val/landmark_acc"]) == 3
    loss_ax = curves_figure("landmark", series).axes[0]
    assert all(max(line.get_xdata()) <= 3 for line in loss_ax.lines)
    marks = [line for line in loss_ax.lines if line.get_label() == "chosen (epoch 1)"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [1, 1]
    plain = read_epoch_metrics(write_stage_log(tmp_path / "plain", "landmark", epochs=4))
    assert split_revalidation(plain) == (plain, None)  # no re-validation row: nothing marked


def test_curves_show_the_monitored_score(run_dir: Path) -> None:
    """Checkpoints are kept by val/f1 (the default): the right panel draws F1, not accuracy."""
    from landmark_tl.reporting.plots import curves_figure

    series = read_epoch_metrics(run_dir / "logs" / "landmark" / "metrics.csv")
    score_ax = curves_figure("landmark", series).axes[1]
    assert score_ax.get_title() == "Stage 'landmark': macro F1 (monitor val/f1)"
    drawn = {line.get_label(): list(line.get_ydata()) for line in score_ax.lines}
    assert drawn["val landmark"] == pytest.approx([0.1 * e for e in range(6)])
    by_accuracy = curves_figure("landmark", series, monitor="val/landmark_acc").axes[1]
    assert by_accuracy.get_title() == "Stage 'landmark': accuracy (monitor val/landmark_acc)"
    by_loss = curves_figure("landmark", series, monitor="val/loss").axes[1]
    assert "macro F1" in by_loss.get_title()  # a loss has its own panel


def test_confusion_matrix_is_normalised_with_category_blocks(run_dir: Path) -> None:
    from matplotlib.patches import Rectangle

    from landmark_tl.reporting.plots import category_ordered, confusion_figures, read_hierarchy

    names, blocks = category_ordered(read_hierarchy(run_dir))
    assert names == LANDMARKS and blocks == [("Gothic", 2), ("Pyramids", 2)]
    ax = confusion_figures(run_dir)["landmark"].axes[0]
    shares = ax.images[0].get_array()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)  # each true class sums to 1
    assert shares[0, 0] == pytest.approx(0.6) and shares[0, 2] == pytest.approx(0.4)
    frames = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(f.get_xy(), f.get_width()) for f in frames] == [((-0.5, -0.5), 2), ((1.5, 1.5), 2)]
    assert {t.get_text() for t in ax.texts} == {"60", "40"}  # shares in %
