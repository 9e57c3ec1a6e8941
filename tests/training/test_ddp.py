"""Data-parallel training on 2 CPU processes (gloo): one run dir, whole-test-set metrics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from landmark_tl.training.run import train
from tests.conftest import REPO_ROOT, TINY_OVERRIDES

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow


def _run(tiny_tree: Path, out: Path, cache: Path, *overrides: str) -> Path:
    args = [
        sys.executable,
        "-m",
        "landmark_tl.train",
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.output_dir={out}",
        f"paths.cache_dir={cache}",
        "data.batch_size=4",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "RANK", "WORLD_SIZE"}}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1  # every rank wrote into the one run dir
    return runs[0]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "predictions.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "strategy",
    [["strategy=multi_output"], ["strategy=head_swap", "strategy.stages.category.epochs=2"]],
)
def test_two_process_ddp_scores_the_whole_test_set_like_one_process(
    strategy, tiny_config, tiny_tree, tmp_path
):
    # lr 0: both runs keep the same (seeded) weights, so any difference would come from
    # how the distributed test set is sharded and gathered back
    same = [*strategy, "strategy.lr=0.0"]
    single = tmp_path / "one"  # the reference in this process: no second start-up to pay
    train(tiny_config(*same, "data.batch_size=4"), single)
    ddp = _run(
        tiny_tree,
        tmp_path / "two",
        tmp_path / "cache",
        *same,
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )
    one_metrics = json.loads((single / "metrics.json").read_text())
    two_metrics = json.loads((ddp / "metrics.json").read_text())
    for task in ("category", "landmark"):
        assert two_metrics["test"][task]["n"] == 8  # all test images, no padding repeats
        for key in ("macro_f1", "accuracy"):
            assert two_metrics["test"][task][key] == pytest.approx(
                one_metrics["test"][task][key], abs=1e-6
            )
    assert [r["path"] for r in _rows(ddp)] == [r["path"] for r in _rows(single)]
    assert [r["pred_landmark"] for r in _rows(ddp)] == [r["pred_landmark"] for r in _rows(single)]
    assert (ddp / ".hydra" / "config.yaml").is_file() and (ddp / "split.csv").is_file()
