"""Long tails: small landmarks dropped or kept for training only, scores per frequency bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from landmark_tl.commands.doctor import main as doctor
from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.data.catalog import Catalog
from landmark_tl.data.longtail import drop_small_landmarks, frequency_bucket_scores
from landmark_tl.data.records import CatalogError, ImageRecord
from landmark_tl.data.splits import SmallLandmarks, SplitError, SplitSpec, stratified_split
from landmark_tl.training.run import train
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.datasets import make_gldv2

ROOT = Path("/data")


def _catalog(sizes: dict[str, int]) -> Catalog:
    records = [
        ImageRecord(ROOT / "C" / lm / f"{i}.jpg", "C", lm)
        for lm, n in sizes.items()
        for i in range(n)
    ]
    return Catalog(ROOT, records, LabelHierarchy.from_pairs(("C", lm) for lm in sizes))


def test_min_images_drops_and_lists_smaller_landmarks():
    catalog = drop_small_landmarks(_catalog({"a": 6, "b": 2, "c": 3}), 3, SplitSpec(1, 1))
    assert catalog.hierarchy.landmarks == (("C", "a"), ("C", "c"))
    assert len(catalog.records) == 9
    [dropped] = catalog.dropped
    assert (dropped.landmark, dropped.images) == ("b", 2)
    assert dropped.reason == "2 images, fewer than data.min_images_per_landmark=3"


def test_small_landmarks_error_train_only_or_drop():
    catalog = _catalog({"a": 6, "b": 2})
    with pytest.raises(SplitError, match="data.split.small=train_only"):
        stratified_split(catalog, SplitSpec(1, 1))
    assignment = stratified_split(catalog, SplitSpec(1, 1, small=SmallLandmarks.train_only))
    assert assignment[6:] == ["train", "train"] and sorted(assignment[:6]).count("train") == 4
    dropped = drop_small_landmarks(catalog, 1, SplitSpec(1, 1, small="drop"))
    assert [r.landmark for r in dropped.records] == ["a"] * 6
    assert "too few for data.split.val=1 + data.split.test=1 + 1 train" in dropped.dropped[0].reason


def test_nothing_left_after_filtering_is_refused_naming_the_filter():
    with pytest.raises(CatalogError, match="data.min_images_per_landmark=10 and data.split.small"):
        drop_small_landmarks(_catalog({"a": 6, "b": 2}), 10, SplitSpec())
    with pytest.raises(SplitError, match="data.split.small='most'"):
        SplitSpec(small="most")


def test_bucket_scores_group_test_images_by_training_frequency():
    train_counts = torch.tensor([2, 4, 7, 30, 0])
    targets = {"landmark": torch.tensor([0, 1, 2, 2, 3]), "category": torch.tensor([0, 0, 1, 1, 1])}
    preds = {"landmark": torch.tensor([0, 0, 2, 1, 3]), "category": torch.tensor([0, 1, 1, 1, 1])}
    scores = frequency_bucket_scores(train_counts, preds, targets)
    assert scores == {
        "1-4": {"landmarks": 2, "n": 2, "landmark_accuracy": 0.5, "category_accuracy": 0.5},
        "5-19": {"landmarks": 1, "n": 2, "landmark_accuracy": 0.5, "category_accuracy": 1.0},
        "20+": {"landmarks": 1, "n": 1, "landmark_accuracy": 1.0, "category_accuracy": 1.0},
    }


@pytest.mark.slow
def test_gldv2_long_tail_trains_and_reports(tmp_path, capsys):
    make_gldv2(tmp_path / "gldv2")
    overrides = [
        *(o for o in TINY_OVERRIDES if not o.startswith("data=")),
        "data=gldv2",
        f"data.root={tmp_path / 'gldv2'}",
        "data.min_images_per_landmark=2",
        "data.split.small=train_only",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    assert doctor(overrides[:]) == 0
    assert "## Dropped landmarks (2)" in capsys.readouterr().out
    metrics = train(compose_config(*overrides), tmp_path / "run")
    dropped = {d["landmark"]: d["reason"] for d in metrics["data"]["dropped_landmarks"]}
    assert dropped == {
        "107": "no row in train_label_to_hierarchical.csv",
        "106": "1 images, fewer than data.min_images_per_landmark=2",
    }
    # 101: 11 images, 102: 8, 103: 7, 104: 6 give 1 val + 2 test; 105 (3 images) only trains
    assert metrics["data"]["split"] == {"train": 23, "val": 4, "test": 8}
    buckets = metrics["frequency_buckets"]
    # training images: 101: 8, 102: 5, 103: 4, 104: 3, 105: 3
    assert [buckets[b]["landmarks"] for b in ("1-4", "5-19", "20+")] == [3, 2, 0]
    assert [buckets[b]["n"] for b in ("1-4", "5-19", "20+")] == [4, 4, 0]
    report = (tmp_path / "run" / "data_report.md").read_text()
    assert "- bridge/106 (1 images): 1 images, fewer than data.min_images_per_landmark=2" in report
    assert "not downloaded" in report and "train_clean.csv keeps 41 of 42" in report
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
