"""End to end: compose the real configs, train on a tiny tree, check the run dir."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf.errors import ValidationError

from landmark_tl.core.errors import UsageError
from landmark_tl.training.run import train
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

RUN_FILES = {
    "split.csv",
    "problems.csv",
    "hierarchy.json",
    "data_report.md",
    "predictions.csv",
    "metrics.json",
    "checkpoints/joint-best.ckpt",
    "logs/joint/metrics.csv",
    "plots/curves_joint.png",
    "plots/confusion_category.png",
    "plots/confusion_landmark.png",
}


def _assert_scores(metrics: dict) -> None:
    for task in ("category", "landmark"):
        scores = metrics["test"][task]
        assert 0.0 <= scores["macro_f1"] <= 1.0 and 0.0 <= scores["accuracy"] <= 1.0
        assert scores["n"] == 8 and scores["stage"] == "joint"


def test_train_writes_the_run_dir(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    metrics = train(tiny_config(), run_dir)
    assert all((run_dir / f).is_file() for f in RUN_FILES)
    _assert_scores(metrics)
    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["split"] == {"train": 12, "val": 4, "test": 8}
    assert set(metrics["val"]) == {"category", "landmark"}
    assert all(0.0 <= v["macro_f1"] <= 1.0 for v in metrics["val"].values())
    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {"true_landmark", "pred_landmark", "prob_category"} <= set(rows[0])
    with open(run_dir / "logs/joint/metrics.csv") as f:
        logged = list(csv.DictReader(f))
    assert {"train/loss", "val/loss", "val/landmark_f1", "val/category_acc"} <= set(logged[0])
    assert sorted(int(r["epoch"]) for r in logged if r["train/loss"]) == [0, 1]  # two epochs


def test_same_seed_same_metrics_and_split_file_reuse(tiny_config, tmp_path):
    first = train(tiny_config("data.augment=study"), tmp_path / "a")
    again = train(
        tiny_config(
            "data.augment=study",
            f"data.split_file={tmp_path / 'a/split.csv'}",
            "data.split.seed=99",
        ),
        tmp_path / "b",
    )
    assert first["test"] == again["test"]
    assert (tmp_path / "a/split.csv").read_bytes() == (tmp_path / "b/split.csv").read_bytes()
    assert first["data"]["split"]["train"] == 12  # views do not change the image counts


def test_unreadable_images_are_skipped_and_reported(tiny_tree, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(tiny_tree, tree)
    broken = tree / "Gothic" / "Milan Cathedral" / "broken.png"
    broken.write_bytes((tree / "Gothic" / "Milan Cathedral" / "0.png").read_bytes()[:200])
    config = compose_config(
        *TINY_OVERRIDES, f"data.root={tree}", f"paths.cache_dir={tmp_path / 'cache'}"
    )
    metrics = train(config, tmp_path / "run")
    assert [p["path"] for p in metrics["data"]["skipped"]] == [str(broken)]
    report = (tmp_path / "run" / "problems.csv").read_text()
    assert "broken.png" in report
    assert metrics["data"]["images"] == 24


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("data.augment=sideways", UsageError, "data.augment"),
        ("strategy.stages.joint.epocs=3", UsageError, "epocs"),
        ("head.dropout=lots", UsageError, "head.dropout"),
    ],
)
def test_bad_config_values_fail_at_start_naming_the_key(override, error, message):
    with pytest.raises(error) as info:
        compose_config(override)
    assert message in str(info.value) + str(info.value.__cause__)


def test_folder_data_needs_a_root():
    with pytest.raises((ValidationError, ValueError), match="root"):
        train(compose_config("data=folder"), Path("/nonexistent"))


def test_command_line_entry_point_prints_scores_and_run_dir(tiny_tree, tmp_path):
    env = {**os.environ, "LANDMARK_TL_CACHE": str(tmp_path / "cache")}
    args = [
        sys.executable,
        "-m",
        "landmark_tl.train",
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test landmark" in done.stdout and "macro F1" in done.stdout
    run_dir = Path(done.stdout.strip().splitlines()[-1].removeprefix("run dir: "))
    assert run_dir.parent == tmp_path / "out" / "runs"
    assert (run_dir / "metrics.json").is_file() and (run_dir / ".hydra/config.yaml").is_file()


def test_odd_and_undecodable_folder_names_train_end_to_end(tiny_tree, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(tiny_tree, tree)
    os.rename(tree / "Gothic", tree / "Panth‚on")  # the study's mojibake, valid UTF-8
    raw = os.fsencode(tree / "Pyramids") + b"/Hallgr\xa1mskirkja"  # not valid UTF-8
    os.rename(tree / "Pyramids" / "Louvre Pyramid", raw)
    config = compose_config(
        *TINY_OVERRIDES, f"data.root={tree}", f"paths.cache_dir={tmp_path / 'cache'}"
    )
    metrics = train(config, tmp_path / "run")
    _assert_scores(metrics)
    hierarchy = json.loads(
        (tmp_path / "run" / "hierarchy.json").read_bytes().decode("utf-8", "surrogateescape")
    )
    assert ["Pyramids", "Hallgr\udca1mskirkja"] in hierarchy["landmarks"]
    with open(
        tmp_path / "run" / "predictions.csv", encoding="utf-8", errors="surrogateescape"
    ) as f:
        true_landmarks = {row["true_landmark"] for row in csv.DictReader(f)}
    assert "Pyramids/Hallgr\ufffdmskirkja" in true_landmarks
    assert "Panth‚on/Milan Cathedral" in true_landmarks
