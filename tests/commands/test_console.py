"""What a run prints: its progress and summary; library notices in <run dir>/train.log
(``--verbose`` shows them); startup failures as one message, exit 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, TINY_OVERRIDES

# every test runs the command line in a subprocess: pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

# Lightning's warnings that landmark_tl caused itself (now fixed or intended) and the
# LeafSpec deprecation inside Lightning: in neither the console nor train.log.
FIXED = (
    "multiple `ModelCheckpoint`",
    "exists and is not empty",
    "in eval mode",
    "`training_step` returned `None`",
    "configure_optimizers` returned `None`",  # knn: no optimiser, on purpose
    "LeafSpec",
    "in training mode",
)


def landmark_tl(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """``python -m landmark_tl <args>`` in a subprocess, with its own cache."""
    return subprocess.run(
        [sys.executable, "-m", "landmark_tl", *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "LANDMARK_TL_CACHE": str(tmp_path / "cache"),
            "HYDRA_FULL_ERROR": "",
            "LANDMARK_TL_VERBOSE": "",
            **(env or {}),
        },
        timeout=600,
        cwd=REPO_ROOT,
    )


def test_runs_print_no_library_notices_and_log_them(tiny_tree, tmp_path):
    sweep = tmp_path / "sweep"
    done = landmark_tl(
        tmp_path,
        "train",
        "--multirun",
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        "strategy=head_swap,linear_probe,knn",  # two stages in one folder; epochs that fit
        "strategy.stages.landmark.epochs=2",
        "strategy.stages.category.epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("run dir: ") == 3  # each run's summary
    for job in ("0", "1", "2"):
        log = (sweep / job / "train.log").read_text()
        assert "GPU available: False" in log and "`Trainer.fit` stopped" in log
        assert not [notice for notice in FIXED if notice in log], log
    export = landmark_tl(tmp_path, "export", f"run={sweep / '1'}", "format=onnx")
    assert export.returncode == 0, export.stderr
    assert not [notice for notice in FIXED if notice in export.stderr], export.stderr


@pytest.mark.parametrize("verbose", ["--verbose", "extras.quiet=false"])
def test_verbose_shows_library_notices_on_the_console(tiny_tree, tmp_path, verbose):
    done = landmark_tl(
        tmp_path,
        "train",
        verbose,
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stderr
    assert "GPU available: False" in done.stderr
    assert "GPU available: False" not in (tmp_path / "run" / "train.log").read_text()
    assert not [notice for notice in FIXED if notice in done.stderr], done.stderr


NO_GPU = "trainer=gpu" if not torch.cuda.is_available() else "trainer.accelerator=tpu"


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        ([NO_GPU], {}, ["sees no", "use trainer=auto", "or trainer=cpu"]),
        (
            ["logger=[csv,wandb]"],
            {},
            ["logger.wandb needs the wandb package", "pip install 'landmark_tl[wandb]'"],
        ),
        (
            ["backbone.name=resnet18", "backbone.weights=hub"],
            {"HF_ENDPOINT": "http://127.0.0.1:1", "HF_HUB_OFFLINE": ""},
            ["backbone.weights=hub: cannot reach 127.0.0.1:1", "backbone.weights=file"],
        ),
    ],
    ids=["gpu-without-gpu", "tracker-not-installed", "hub-offline"],
)
def test_startup_failures_print_one_message_and_exit_1(tiny_tree, tmp_path, args, env, needles):
    run = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = landmark_tl(tmp_path, "train", *run, *args, env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_debug_shows_the_traceback_of_a_startup_failure(tiny_tree, tmp_path):
    run = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = landmark_tl(tmp_path, "train", "--debug", *run, NO_GPU)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr
