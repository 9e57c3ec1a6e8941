"""A report cannot mix studies: grouping by study, runs listed apart, row names, out=."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from landmark_tl.commands.report import main
from landmark_tl.reporting.report import summarise
from landmark_tl.reporting.studies import ignored, row_groups, select, take_inventory
from landmark_tl.runs.fingerprint import Fingerprint
from tests.reporting.test_report import PATHS, TRUTH, make_run, wrong_first

CODE = {"landmark_tl": "test", "git": None}
BASE = {
    "data.source": "folder",
    "data.split.val": 1.0,
    "data.split.test": 2.0,
    "data.split.small": "error",
    "data.split.seed": 0,
    "backbone.name": "tf_efficientnet_lite0",
    "backbone.weights": "package",
    "backbone.weights_file": None,
    "strategy.lr": 0.001,
    "seed": 0,
}


def fingerprinted(
    root: Path,
    name: str,
    approach: str = "A",
    pred: list[str] = TRUTH,
    data: str = "images-1",
    overrides: tuple[str, ...] = (),
    paths: list[str] = PATHS,
    **settings: Any,
) -> Path:
    """A fake finished run with fingerprint.json: ``settings`` (dots as ``__``) over BASE."""
    run_dir = make_run(root, name, approach, int(settings.get("seed", 0)), pred, paths)
    config = BASE | {k.replace("__", "."): v for k, v in settings.items()}
    fingerprint = Fingerprint(config, data, f"split-{config['data.split.seed']}", CODE)
    (run_dir / "fingerprint.json").write_text(json.dumps(fingerprint.to_dict()))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics |= {"fingerprint": fingerprint.digest, "overrides": list(overrides)}
    metrics["data"] |= {"source": config["data.source"], "images": 40}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_keys_that_cannot_change_a_result_are_ignored() -> None:
    for key in (
        "extras.quiet",
        "logger.mlflow.tracking_uri",
        "paths.output_dir",
        "resume",
        "hydra/launcher",
        "callbacks.lr_monitor._target_",
        "callbacks.model_summary.max_depth",
        "trainer.accelerator",
        "+extras.plots",
    ):
        assert ignored(key), key
    for key in ("strategy.lr", "data.batch_size", "callbacks.ema.decay", "trainer.precision"):
        assert not ignored(key), key


def test_runs_of_other_data_or_backbones_are_other_studies(tmp_path: Path) -> None:
    fingerprinted(tmp_path, "a0")
    fingerprinted(tmp_path, "a1", seed=1)
    fingerprinted(tmp_path, "other-data", data="images-2")
    fingerprinted(tmp_path, "other-backbone", backbone__name="vgg16")
    fingerprinted(tmp_path, "other-weights", backbone__weights="none")
    fingerprinted(tmp_path, "other-split-design", data__split__test=0.2)
    inventory = take_inventory([tmp_path])
    sizes = sorted(len(s.runs) for s in inventory.studies)
    assert sizes == [1, 1, 1, 1, 2]
    assert inventory.studies[0].runs[0].directory.name in {"a0", "a1"}
    with pytest.raises(ValueError, match="the runs belong to 5 studies") as refused:
        select(inventory, None)
    for study in inventory.studies:
        assert f"study={study.id}: " in str(refused.value)
    assert "Pick one with study=<id>, or study=all" in str(refused.value)
    assert select(inventory, inventory.studies[0].id[:4]) == [inventory.studies[0]]
    assert select(inventory, "all") == inventory.studies


def test_split_seeds_of_one_design_are_one_study_pooled(tmp_path: Path) -> None:
    other = [f"s1_{i:02d}.png" for i in range(20)]
    for split, paths in ((0, PATHS), (1, other)):
        for approach, pred in (("A", TRUTH), ("B", wrong_first(2))):
            fingerprinted(tmp_path, f"{approach}{split}", approach, pred, paths=paths,
                          data__split__seed=split)  # fmt: skip
    [study] = take_inventory([tmp_path]).studies
    table = summarise(study.runs, bootstrap=50)
    assert table.splits == 2 and [row.approach for row in table.rows] == ["A", "B"]


def test_rows_are_named_by_the_keys_that_differ_not_the_command_line(tmp_path: Path) -> None:
    """Cosmetic keys differ between A's runs (extras, logger, paths, resume, lr_monitor,
    accelerator): one row; strategy.lr differs between B's runs: two rows named by it."""
    fingerprinted(tmp_path, "a0", overrides=("data=folder", "data.root=/tmp/fm"))
    fingerprinted(
        tmp_path,
        "a1",
        seed=1,
        overrides=("data=folder", "data.root=/tmp/fm", "extras.quiet=true", "resume=true"),
        extras__quiet=True,
        logger__csv__name="x",
        paths__output_dir="/elsewhere",
        callbacks__lr_monitor___target_="LearningRateMonitor",
        trainer__accelerator="gpu",
    )
    fingerprinted(tmp_path, "b0", "B", wrong_first(1), strategy__lr=0.01)
    fingerprinted(tmp_path, "b1", "B", wrong_first(2), strategy__lr=0.1)
    [study] = take_inventory([tmp_path]).studies
    groups = row_groups(study.runs)
    assert sorted(groups) == ["A", "B strategy.lr=0.01", "B strategy.lr=0.1"]
    assert len(groups["A"]) == 2


def test_a_resumed_multirun_is_one_row(tmp_path: Path) -> None:
    """Issue 29: runs of one point, some resumed (resume=True among the overrides of a run
    without a fingerprint), make one row, not "multi_output" and "multi_output resume=True"."""
    for n, extra in enumerate(([], ["resume=True"], ["resume=True", "hydra.job.chdir=false"])):
        run_dir = make_run(tmp_path, str(n), "multi_output", n, TRUTH)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["overrides"] = ["strategy=multi_output", f"seed={n}", *extra]
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    [study] = take_inventory([tmp_path]).studies
    table = summarise(study.runs, bootstrap=50)
    assert [(row.approach, len(row.seeds)) for row in table.rows] == [("multi_output", 3)]


def test_debug_failed_and_unfinished_runs_are_listed_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    fingerprinted(runs, "good0")
    fingerprinted(runs, "good1", "B", wrong_first(2))
    fdr = fingerprinted(runs, "fdr", "B", TRUTH, overrides=("debug=fdr",))
    limit = fingerprinted(runs, "limit", "B", TRUTH, trainer__extra__limit_train_batches=5)
    failed = runs / "failed"
    failed.mkdir()
    (failed / "failed.json").write_text(json.dumps({"error": "loss is NaN"}))
    unfinished = runs / "unfinished"
    unfinished.mkdir()
    (unfinished / "fingerprint.json").write_text("{}")
    out = tmp_path / "out"
    assert main([f"runs={runs}", f"out={out}", "bootstrap=50", "html=false"]) == 0
    captured = capsys.readouterr()
    markdown = (out / "table1.md").read_text()
    assert "2 runs of 2 approaches" in markdown  # only the good runs are scored
    assert f"Read `{runs}`: 2 finished runs in 1 study." in markdown
    assert f"Not scored, debug runs:\n- skipped run {fdr}: debug run (debug=fdr)" in markdown
    assert f"- skipped run {limit}: debug run (trainer.extra.limit_train_batches=5)" in markdown
    assert f"Not scored, failed runs:\n- skipped run {failed}: failed: loss is NaN" in markdown
    assert f"Not scored, unfinished runs:\n- skipped run {unfinished}: unfinished" in markdown
    assert f"warning: skipped run {fdr}: debug run" in captured.err
    assert not (out / "report.html").exists()  # html=false


def test_cli_refuses_mixed_studies_and_writes_one_report_per_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    fingerprinted(runs, "fm", overrides=("data=folder", "data.root=/tmp/fm"))
    fingerprinted(runs, "embedded", "B", data="embedded-set")
    assert main([f"runs={runs}", "bootstrap=20"]) == 2
    err = capsys.readouterr().err
    assert "the runs belong to 2 studies" in err and "study=all" in err
    assert not (tmp_path / "runs-report").exists()  # refused: nothing written
    ids = [s.id for s in take_inventory([runs]).studies]
    assert main([f"runs={runs}", f"study={ids[1][:5]}", "bootstrap=20", "html=false"]) == 0
    assert "1 run of 1 approach" in (tmp_path / "runs-report" / "table1.md").read_text()
    out = tmp_path / "all"
    assert main([f"runs={runs}", f"out={out}", "study=all", "bootstrap=20", "html=false"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(ids)
    for study_id in ids:
        assert f"Study `{study_id}`" in (out / study_id / "table1.md").read_text()
    assert main([f"runs={runs}", "study=nonesuch", "bootstrap=20"]) == 2
    assert "study=nonesuch names none of them" in capsys.readouterr().err
