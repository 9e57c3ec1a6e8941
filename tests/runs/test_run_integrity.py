"""Runs that cannot lie: one run per dir, resume only with the same fingerprint, relocatable
run dirs, splits checked before training, empty val/test splits, seeds and conflicting
options refused at start."""

from __future__ import annotations

import csv
import json
import shutil
import signal
from pathlib import Path

import pytest

from landmark_tl.config.schema import MAX_SEED, ConfigError
from landmark_tl.data.doctor import format_report, inspect_tree
from landmark_tl.data.splits import SplitError
from landmark_tl.reporting.render import markdown_table
from landmark_tl.reporting.report import summarise
from landmark_tl.runs.fingerprint import Fingerprint, RunDirError
from landmark_tl.runs.rundir import collect_runs
from landmark_tl.serving.inference import load_run
from landmark_tl.training.fit import RelocatableCheckpoint
from landmark_tl.training.run import train
from tests.conftest import compose_config
from tests.training.test_resume import HEAD_SWAP, _kill_during

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

SHORT = ["strategy.stages.joint.epochs=1"]


@pytest.fixture(scope="module")
def finished(tiny_tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished tiny run and the overrides that made it."""
    root = tmp_path_factory.mktemp("finished")
    from tests.conftest import TINY_OVERRIDES

    args = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"paths.cache_dir={root / 'cache'}", *SHORT]
    run_dir = root / "run"
    metrics = train(compose_config(*args), run_dir)
    return run_dir, args, metrics


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def test_run_dir_records_its_fingerprint_and_metrics_carry_it(finished):
    run_dir, _, metrics = finished
    recorded = json.loads((run_dir / "fingerprint.json").read_text())
    assert metrics["fingerprint"] == recorded["digest"]
    assert recorded["config"]["data.split.seed"] == 0 and "resume" not in recorded["config"]
    assert recorded["data"] and recorded["split"] and recorded["code"]["landmark_tl"]


def test_new_run_refuses_a_dir_holding_another_run(finished, tmp_path):
    run_dir, args, _ = finished
    copy = _copy(run_dir, tmp_path)
    before = (copy / "metrics.json").read_bytes()
    with pytest.raises(RunDirError, match=r"already holds a run.*resume=true"):
        train(compose_config(*args, "seed=1"), copy)
    assert (copy / "metrics.json").read_bytes() == before  # nothing was touched


def test_resume_with_a_changed_config_names_the_keys(finished, tmp_path):
    run_dir, args, _ = finished
    copy = _copy(run_dir, tmp_path)
    (copy / "metrics.json").unlink()  # an interrupted run
    with pytest.raises(RunDirError, match=r"data\.split\.seed: 0 → 1(.|\n)*head\.dropout"):
        train(compose_config(*args, "resume=true", "data.split.seed=1", "head.dropout=0.3"), copy)
    with pytest.raises(RunDirError, match=r"data\.split\.seed: 0 → 1"):  # a finished one too
        train(compose_config(*args, "resume=true", "data.split.seed=1"), run_dir)


def test_differences_tell_a_key_the_code_no_longer_has_from_a_null_value():
    code = {"landmark_tl": "1", "git": None}
    recorded = Fingerprint({"data.clean": True, "head.dropout": 0.5, "x": None}, "d", "s", code)
    now = Fingerprint({"head.dropout": 0.3, "x": 1}, "d", "s", {**code, "git": "abc"})
    assert recorded.differences(now) == [
        "data.clean: true → (no such key)",
        "head.dropout: 0.5 → 0.3",
        "x: null → 1",
        'code.git: null → "abc"',
    ]


def test_resume_with_changed_data_is_refused(finished, tiny_tree, tmp_path):
    run_dir, args, _ = finished
    copy = _copy(run_dir, tmp_path)
    (copy / "metrics.json").unlink()
    tree = tmp_path / "tree"
    shutil.copytree(tiny_tree, tree)
    victim = next(tree.rglob("*.png"))
    extra = victim.with_name("extra.png")
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(extra)
    moved = [a if not a.startswith("data.root=") else f"data.root={tree}" for a in args]
    with pytest.raises(RunDirError, match=r"data: images were added"):
        train(compose_config(*moved, "resume=true"), copy)


def test_cosmetic_keys_do_not_block_a_resume(finished):
    run_dir, args, metrics = finished
    again = train(
        compose_config(
            *args, "resume=true", "trainer.log_every_n_steps=5", "logger=[csv,tensorboard]"
        ),
        run_dir,
    )
    assert again == metrics


def test_readers_refuse_metrics_of_another_run(finished, tmp_path):
    run_dir, _, _ = finished
    copy = _copy(run_dir, tmp_path)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["fingerprint"] = "0" * 32
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunDirError, match="inconsistent"):
        load_run(copy)
    runs, skipped = collect_runs([copy])
    assert not runs and "inconsistent" in skipped[0]


def test_relocated_checkpoint_state_points_into_the_new_dir(tmp_path):
    callback = RelocatableCheckpoint(dirpath=tmp_path / "new" / "checkpoints")
    old = "/elsewhere/run/checkpoints"
    callback.load_state_dict(
        {
            "dirpath": old,
            "monitor": "val/loss",
            "best_model_score": 0.5,
            "best_model_path": f"{old}/joint-best.ckpt",
            "best_k_models": {f"{old}/joint-best.ckpt": 0.5},
            "kth_best_model_path": f"{old}/joint-best.ckpt",
            "kth_value": 0.5,
            "last_model_path": f"{old}/joint-last.ckpt",
            "current_score": 0.5,
        }
    )
    new = str(tmp_path / "new" / "checkpoints")
    assert callback.best_model_path == f"{new}/joint-best.ckpt"
    assert callback.best_model_score == 0.5  # kept, unlike Lightning's own on a moved dir
    assert list(callback.best_k_models) == [f"{new}/joint-best.ckpt"]


def test_a_moved_killed_run_resumes_in_its_new_place(tiny_tree, tmp_path):
    from tests.conftest import TINY_OVERRIDES

    args = [
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *HEAD_SWAP,
    ]
    reference = train(compose_config(*args), tmp_path / "uninterrupted")
    killed = tmp_path / "killed"
    assert _kill_during(args, killed, "category", 1, tmp_path) == -signal.SIGKILL
    moved = tmp_path / "moved"
    shutil.move(killed, moved)
    stage = (moved / "stages" / "landmark.pt").read_bytes()
    assert str(killed).encode() not in stage  # stored paths are relative to the run dir
    resumed = train(compose_config(*args, "resume=true"), moved)
    assert resumed["test"] == reference["test"] and resumed["val"] == reference["val"]
    assert [s["best_checkpoint"] for s in resumed["stages"]] == [
        "checkpoints/landmark-best.ckpt",
        "checkpoints/category-best.ckpt",
    ]


def _split_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_split_file_leaving_a_landmark_untrained_is_refused(
    finished, tiny_config, tiny_tree, tmp_path
):
    run_dir, _, _ = finished
    rows = _split_rows(run_dir / "split.csv")
    landmark = rows[0]["landmark"]
    for row in rows:
        if row["landmark"] == landmark:
            row["split"] = "test"
    bad = tmp_path / "split.csv"
    with open(bad, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SplitError, match=rf"no training image(.|\n)*{landmark}"):
        train(tiny_config(f"data.split_file={bad}"), tmp_path / "run")
    assert not (tmp_path / "run" / "split.csv").exists()  # refused before anything ran
    report = inspect_tree(tiny_tree, split_file=bad)  # the doctor checks the file too
    assert not report.ok and "no training image" in format_report(report)


def test_no_validation_split_keeps_the_last_epoch_and_says_so(tiny_config, tmp_path):
    metrics = train(tiny_config("data.split.val=0", *SHORT), tmp_path / "run")
    assert metrics["data"]["split"]["val"] == 0
    assert metrics["validation"] == "none: last epoch kept"
    assert metrics["val"] == {} and set(metrics["test"]) == {"category", "landmark"}
    assert metrics["stages"][0]["best_val_loss"] is None
    assert load_run(tmp_path / "run").predict(next(Path(metrics["data"]["root"]).rglob("*.png")))
    runs, _ = collect_runs([tmp_path / "run"])
    assert "no validation split" in markdown_table(summarise(runs, bootstrap=50))


def test_no_test_split_trains_and_says_there_is_nothing_to_score(tiny_config, tmp_path):
    metrics = train(tiny_config("data.split.test=0", *SHORT), tmp_path / "run")
    assert metrics["test"] == {} and metrics["hierarchy"] == {}
    assert set(metrics["val"]) == {"category", "landmark"}
    runs, skipped = collect_runs([tmp_path / "run"])
    assert not runs and "no test split" in skipped[0]


def test_early_stopping_without_validation_is_refused_before_training(tiny_config, tmp_path):
    config = tiny_config("data.split.val=0", "strategy.stages.joint.patience=2")
    with pytest.raises(ValueError, match=r"strategy\.stages\.joint\.patience=2.*validation"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**32 - 1])
def test_seeds_are_checked_for_every_stage(tiny_config, tmp_path, seed):
    with pytest.raises(ConfigError, match=rf"seed={seed}: must be in \[0, {MAX_SEED}\]"):
        train(tiny_config(f"seed={seed}", "strategy=head_swap"), tmp_path / "run")


def test_largest_seed_runs_every_stage(tiny_config, tmp_path):
    config = tiny_config(
        f"seed={MAX_SEED}",
        "strategy=head_swap",
        "strategy.stages.landmark.epochs=1",
        "strategy.stages.category.epochs=1",
    )
    assert [s["name"] for s in train(config, tmp_path / "run")["stages"]] == [
        "landmark",
        "category",
    ]


def test_training_a_frozen_backbone_in_stage2_is_refused(tiny_config, tmp_path):
    config = tiny_config("strategy=head_swap", "strategy.train_in_stage2=[head,backbone]")
    with pytest.raises(ConfigError, match=r"train_in_stage2.*backbone\.freeze=all"):
        train(config, tmp_path / "run")


def test_a_failed_run_says_why_the_report_lists_it_and_resume_retries(
    finished, tmp_path, monkeypatch
):
    run_dir, args, _ = finished

    def fail(*_args, **_kwargs):
        raise RuntimeError("diverged in stage joint")

    monkeypatch.setattr("landmark_tl.training.run.fit_stages", fail)
    failed = tmp_path / "sweep" / "1"
    with pytest.raises(RuntimeError, match="diverged"):
        train(compose_config(*args), failed)
    recorded = json.loads((failed / "failed.json").read_text())
    assert recorded["error"] == "RuntimeError: diverged in stage joint"
    assert "in fail" in recorded["traceback"]

    shutil.copytree(run_dir, tmp_path / "sweep" / "0")
    runs, skipped = collect_runs([tmp_path / "sweep"])
    assert [r.directory.name for r in runs] == ["0"]
    assert skipped == [f"skipped run {failed}: failed: RuntimeError: diverged in stage joint"]

    monkeypatch.undo()
    train(compose_config(*args, "resume=true"), failed)
    assert (failed / "metrics.json").is_file() and not (failed / "failed.json").exists()
    assert collect_runs([tmp_path / "sweep"])[1] == []
