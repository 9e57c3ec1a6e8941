"""Sweeps on existing engines: joblib and submitit launchers, the Optuna search."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from landmark_tl.commands.report import main as report_main
from tests.conftest import REPO_ROOT, TINY_OVERRIDES

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow


def _multirun(tiny_tree: Path, tmp_path: Path, *overrides: str) -> list[Path]:
    """Run a multirun on the tiny tree; return its run dirs (those with a metrics.json)."""
    args = [
        sys.executable,
        "-m",
        "landmark_tl.train",
        "-m",
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(p.parent for p in (tmp_path / "sweep").rglob("metrics.json"))


def _cache_entries(tmp_path: Path) -> int:
    """Rows in the feature store (one per image and view)."""
    (index,) = (tmp_path / "cache" / "features").rglob("index.sqlite")
    with sqlite3.connect(index) as db:
        return db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]


def test_joblib_launcher_runs_points_in_parallel_sharing_one_cache(tiny_tree, tmp_path):
    runs = _multirun(
        tiny_tree,
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "head.dropout=0.0,0.3",
    )
    assert len(runs) == 2 and runs[0] != runs[1]
    overrides = [json.loads((r / "metrics.json").read_text())["overrides"] for r in runs]
    assert {o for run in overrides for o in run if o.startswith("head.dropout")} == {
        "head.dropout=0.0",
        "head.dropout=0.3",
    }
    assert _cache_entries(tmp_path) == 24  # one row per image
    assert len(list((tmp_path / "cache" / "features").rglob("*.npy"))) == 1  # one shared pass


def test_submitit_local_launcher_gives_distinct_run_dirs(tiny_tree, tmp_path):
    runs = _multirun(
        tiny_tree,
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "strategy.lr=0.001,0.01",  # one seed: weights=none backbones differ by seed
    )
    assert len(runs) == 2 and runs[0] != runs[1]
    scores = [json.loads((r / "metrics.json").read_text())["test"] for r in runs]
    assert all(0 <= s["landmark"]["macro_f1"] <= 1 for s in scores)
    assert _cache_entries(tmp_path) == 24


def test_optuna_search_finishes_and_names_its_best_trial(tiny_tree, tmp_path, capsys):
    runs = _multirun(tiny_tree, tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=3")
    assert len(runs) == 3
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    # data.batch_size is fixed by the command line here, so only two parameters are searched
    assert set(results["best_params"]) == {"strategy.lr", "head.dropout"}
    values = [
        json.loads((r / "metrics.json").read_text())["val"]["landmark"]["macro_f1"] for r in runs
    ]
    assert results["best_value"] == max(values)  # optimised on validation, not test
    assert report_main([f"runs={tmp_path / 'sweep'}", "bootstrap=100"]) == 0
    # ranked by the runs' strategy.monitor (val/f1 by default), never by test
    assert "Best by validation macro F1 (mean of the tasks): **multi_output strategy.lr=" in (
        capsys.readouterr().out
    )


def test_interrupted_multirun_resumes_without_redoing_finished_points(tiny_tree, tmp_path):
    runs = _multirun(tiny_tree, tmp_path, "head.dropout=0.0,0.3")
    finished, unfinished = (r / "metrics.json" for r in runs)
    stamp = finished.stat().st_mtime_ns
    unfinished.unlink()  # as if the job had been killed before writing its metrics
    again = _multirun(tiny_tree, tmp_path, "head.dropout=0.0,0.3", "resume=true")
    assert again == runs and unfinished.is_file()
    assert finished.stat().st_mtime_ns == stamp  # the finished point was kept, not redone
