"""Interrupted work resumes: SIGKILL mid-epoch, restart with resume=true, same results."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from landmark_tl.training.run import train
from tests.conftest import REPO_ROOT

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

KILLER = """
import os, signal, sys
sys.path.insert(0, os.getcwd())  # the repository, for tests.conftest
import lightning as L
from landmark_tl.training import fit
from landmark_tl.training.run import train
from tests.conftest import compose_config

stage, epoch = sys.argv[2], int(sys.argv[3])

class KillAt(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.stage == stage and trainer.current_epoch == epoch and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no last words

build = fit.build_trainer
def with_killer(*args, **kwargs):
    trainer = build(*args, **kwargs)
    trainer.callbacks.append(KillAt())
    return trainer
fit.build_trainer = with_killer
train(compose_config(*sys.argv[4:]), sys.argv[1])
"""


class NeedsCode:
    """An object that only unpickling (arbitrary code) could rebuild."""


HEAD_SWAP = [
    "strategy=head_swap",
    "strategy.stages.landmark.epochs=4",
    "strategy.stages.category.epochs=4",
    "data.batch_size=4",
]


def _kill_during(
    tiny_config_args: list[str], run_dir: Path, stage: str, epoch: int, tmp_path: Path
) -> int:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run(
        [sys.executable, str(script), str(run_dir), stage, str(epoch), *tiny_config_args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return done.returncode


@pytest.fixture
def args(tiny_tree, tmp_path):
    from tests.conftest import TINY_OVERRIDES

    return [
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *HEAD_SWAP,
    ]


@pytest.mark.parametrize(("stage", "epoch"), [("landmark", 2), ("category", 1)])
def test_killed_run_resumes_to_the_same_metrics(args, tmp_path, stage, epoch):
    from tests.conftest import compose_config

    reference = train(compose_config(*args), tmp_path / "uninterrupted")
    run_dir = tmp_path / "killed"
    assert _kill_during(args, run_dir, stage, epoch, tmp_path) == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "checkpoints" / f"{stage}-last.ckpt").is_file()  # the stage is recorded
    resumed = train(compose_config(*args, "resume=true"), run_dir)
    assert resumed["test"] == reference["test"]
    assert resumed["val"] == reference["val"]
    for logged in ("landmark", "category"):  # the curves keep the epochs before the kill
        text = (run_dir / "logs" / logged / "metrics.csv").read_text()
        epochs = {line.split(",")[0] for line in text.splitlines()[1:]}
        assert {"0", "1", "2", "3"} <= epochs


def test_resume_of_a_finished_run_keeps_it(args, tmp_path):
    from tests.conftest import compose_config

    first = train(compose_config(*args), tmp_path / "run")
    stamp = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    again = train(compose_config(*args, "resume=true"), tmp_path / "run")
    assert again == first
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == stamp  # not redone


def test_damaged_last_checkpoint_is_refused_naming_the_file(args, tmp_path):
    from tests.conftest import compose_config

    run_dir = tmp_path / "killed"
    assert _kill_during(args, run_dir, "landmark", 2, tmp_path) == -signal.SIGKILL
    last = run_dir / "checkpoints" / "landmark-last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match=r"landmark-last\.ckpt cannot be loaded safely.*delete"):
        train(compose_config(*args, "resume=true"), run_dir)


def test_checkpoint_needing_arbitrary_code_is_refused(tmp_path):
    import torch

    from landmark_tl.training.fit import read_checkpoint

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": NeedsCode()}, path)
    with pytest.raises(RuntimeError, match="cannot be loaded safely"):
        read_checkpoint(path)


def _rates(run_dir: Path, stage: str) -> dict[int, tuple[str, ...]]:
    """Per optimiser step, the learning rates LearningRateMonitor logged."""
    import csv

    with open(run_dir / "logs" / stage / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = sorted(c for c in rows[0] if c.startswith("lr-"))
    return {int(r["step"]): tuple(r[c] for c in columns) for r in rows if r[columns[0]]}


def _average(checkpoint: Path) -> dict:
    import torch

    state = torch.load(checkpoint, weights_only=True)["callbacks"]
    (key,) = [k for k in state if k.startswith("WeightEMA")]
    return state[key]


def test_a_killed_run_continues_its_schedule_and_average_exactly(args, tmp_path):
    """Cosine with a warmup epoch (per step) and an average of the weights: killed in the
    third epoch of the first stage, resumed from the second's checkpoint, same results."""
    from tests.conftest import compose_config

    args = [*args, "optim=timm", "callbacks=[ema,lr_monitor]", "callbacks.ema.decay=0.5"]
    reference = train(compose_config(*args), tmp_path / "uninterrupted")
    run_dir = tmp_path / "killed"
    assert _kill_during(args, run_dir, "landmark", 2, tmp_path) == -signal.SIGKILL
    assert _average(run_dir / "checkpoints" / "landmark-last.ckpt")["steps"] == 2 * 3
    resumed = train(compose_config(*args, "resume=true"), run_dir)
    for key in ("test", "val", "test_ema", "val_ema"):
        assert resumed[key] == reference[key], key
    for stage in ("landmark", "category"):
        rates = _rates(run_dir, stage)
        assert rates == _rates(tmp_path / "uninterrupted", stage) and len(rates) == 4 * 3
        last = f"checkpoints/{stage}-last.ckpt"
        ours, theirs = _average(run_dir / last), _average(tmp_path / "uninterrupted" / last)
        assert ours["steps"] == theirs["steps"] == 4 * 3
        assert all(ours["average"][k].equal(v) for k, v in theirs["average"].items())
