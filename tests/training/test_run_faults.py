"""Runs that fail loudly and alone: diverged runs fail, a run dir has one owner, a refused
command leaves a run's record as it was, a multirun survives a bad point."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from landmark_tl.commands.predict import main as predict_main
from landmark_tl.commands.train import main as train_main
from landmark_tl.config.schema import validate_config
from landmark_tl.core.errors import ConfigError
from landmark_tl.runs.rundir import FAILED_FILE
from landmark_tl.runs.runlock import LOCK_FILE, RunDirBusy, run_dir_lock
from landmark_tl.training.divergence import DivergedError
from landmark_tl.training.run import train
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config

SHORT = ["strategy.stages.joint.epochs=1"]
RECORD = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


@pytest.fixture(scope="module")
def finished(tiny_tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished tiny run, started from the command line, and its overrides."""
    root = tmp_path_factory.mktemp("faults")
    args = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"paths.cache_dir={root / 'cache'}", *SHORT]
    run_dir = root / "run"
    assert train_main([*args, f"hydra.run.dir={run_dir}"]) == 0
    return run_dir, args


def _record(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in (*RECORD, "train.log")}


# --- learning rates and sizes that cannot work are refused at start ---------------------


@pytest.mark.parametrize(
    "override",
    [
        "strategy.stages.joint.lr=inf",
        "strategy.lr=nan",
        "strategy.lr=-inf",
        "strategy.stages.joint.weight_decay=inf",
        "backbone.lr_ratio=inf",
    ],
)
def test_learning_rates_must_be_finite(override):
    key = override.partition("=")[0]
    config = compose_config(*TINY_OVERRIDES, "data.root=/x", override)
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}=\S+: must be (a )?finite"):
        validate_config(config)


@pytest.mark.parametrize("size", ["[3,0,0]", "[3,64]", "[1,64,64]"])
def test_input_size_that_cannot_work_is_refused_naming_the_key(size):
    config = compose_config(*TINY_OVERRIDES, "data.root=/x", f"backbone.input_size={size}")
    with pytest.raises(ConfigError, match=r"backbone\.input_size=.*\[3, height, width\]"):
        validate_config(config)


# --- a diverged run fails ----------------------------------------------------------------


@pytest.mark.parametrize(
    "how", [[], ["backbone.freeze=none", "features.cache=false"]], ids=["heads", "fine-tuning"]
)
def test_a_diverged_run_fails_with_failed_json(tiny_config, tmp_path, how):
    run_dir = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"stage joint: .* diverged") as info:
        train(tiny_config(*how, "strategy.stages.joint.lr=1e30"), run_dir)
    assert "strategy.stages.joint.lr=1e+30" in str(info.value)  # the key to lower
    failed = json.loads((run_dir / FAILED_FILE).read_text())
    assert failed["error"].startswith("DivergedError: stage joint")
    assert not (run_dir / "metrics.json").exists()


def test_a_diverged_command_line_run_exits_1_with_the_message(tiny_tree, tmp_path, capsys):
    args = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"paths.cache_dir={tmp_path / 'c'}"]
    run_dir = tmp_path / "run"
    code = train_main([*args, *SHORT, "strategy.stages.joint.lr=1e30", f"hydra.run.dir={run_dir}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: stage joint: the training loss became NaN or infinite" in err
    assert "Traceback" not in err and (run_dir / FAILED_FILE).is_file()


# --- one owner per run dir ---------------------------------------------------------------


def test_a_run_dir_in_use_is_refused_before_anything_is_written(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    with run_dir_lock(run_dir), ThreadPoolExecutor(1) as other:
        text = (run_dir / LOCK_FILE).read_text()
        assert text.startswith(f"pid {os.getpid()} on ")
        refused = other.submit(train, tiny_config(*SHORT), run_dir)
        with pytest.raises(RunDirBusy, match=rf"in use by another run \(pid {os.getpid()} "):
            refused.result()
    assert [p.name for p in run_dir.iterdir()] == []  # nothing written; the lock let go


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text(f"pid {done.stdout.strip()} on elsewhere since then\n")
    with run_dir_lock(run_dir):
        assert (run_dir / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")
    assert "taking over a stale lock (pid " in caplog.text
    assert not (run_dir / LOCK_FILE).exists()


def test_a_command_into_a_busy_dir_writes_no_hydra_files(finished, tmp_path, capsys):
    run_dir, args = finished
    busy = tmp_path / "busy"
    with run_dir_lock(busy), ThreadPoolExecutor(1) as other:  # another process, as it looks
        code = other.submit(train_main, [*args, f"hydra.run.dir={busy}"]).result()
    assert code == 1 and "is in use by another run" in capsys.readouterr().err
    assert not (busy / ".hydra").exists() and not (busy / "fingerprint.json").exists()


# --- a refused command leaves the run's record as it was --------------------------------


@pytest.mark.parametrize(
    "change",
    [["seed=1"], ["resume=true", "data.split.seed=1"]],
    ids=["new-run-into-a-used-dir", "resume-with-a-changed-key"],
)
def test_a_refused_command_keeps_the_runs_hydra_record(finished, tmp_path, capsys, change):
    run_dir, args = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = _record(copy)
    assert train_main([*args, *change, f"hydra.run.dir={copy}"]) == 1
    assert "error: " in capsys.readouterr().err
    assert _record(copy) == before


def test_resume_of_a_dir_where_no_run_started_is_refused(finished, tmp_path, capsys):
    _, args = finished
    missing = tmp_path / "typo"
    assert train_main([*args, "resume=true", f"hydra.run.dir={missing}"]) == 1
    assert "holds no run to continue" in capsys.readouterr().err
    assert not (missing / "fingerprint.json").exists()


# --- predict -------------------------------------------------------------------------------


def test_top_k_above_the_number_of_landmarks_lists_them_all(finished, tiny_tree, tmp_path):
    run_dir, _ = finished
    out = tmp_path / "p.csv"
    image = next(tiny_tree.rglob("*.png"))
    assert predict_main([f"run={run_dir}", f"inputs={image}", "top_k=1000", f"out={out}"]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("landmark_top")] == [
        f"landmark_top{k}" for k in range(1, 5)
    ]


# --- a multirun survives a bad point -----------------------------------------------------


def _multirun(args: list[str], sweep: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landmark_tl.train", "-m", f"hydra.sweep.dir={sweep}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""},
        timeout=600,
    )


@pytest.mark.slow  # a multirun through a launcher
def test_basic_launcher_runs_every_point_and_lists_the_failures(finished, tmp_path):
    _, args = finished
    sweep = tmp_path / "sweep"
    done = _multirun([*args, "strategy.stages.joint.lr=-1,1e30,0.001"], sweep)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "2 job(s) of the multirun failed" in output
    assert f"#0 {sweep / '0'}: invalid configuration: strategy.stages.joint.lr=-1.0" in output
    assert f"#1 {sweep / '1'}: stage joint: the training loss became" in output
    for job in (0, 1):
        assert (sweep / str(job) / FAILED_FILE).is_file()
        assert not (sweep / str(job) / "metrics.json").exists()
    assert (sweep / "2" / "metrics.json").is_file()
    assert (sweep / "2" / ".hydra" / "overrides.yaml").is_file()
