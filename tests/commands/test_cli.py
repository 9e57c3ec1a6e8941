"""``landmark-tl``: one command, Hydra-style subcommands, exit codes 0 / 1 / 2, completion,
and ``landmark_tl.compose`` giving the command line's config."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

import landmark_tl
from landmark_tl.commands.cli import COMMANDS, main
from landmark_tl.config.schema import TrainConfig, to_train_config

HELP_KEYS = {
    "train": ["strategy: arcface, feature_chain", "data:"],
    "report": ["runs: ???", "bootstrap: 2000"],
    "predict": ["run: ???", "inputs: ???", "top_k: 3"],
    "evaluate": ["run: ???", "data:", "root: null"],
    "export": ["format: ???"],
    "doctor": ["data: folder, gldv2, manifest, shards, synthetic", "split:"],
    "shards": ["out=DIR [per_shard=1000]", "data:"],
}


def test_every_command_has_hydra_help(capsys):
    assert set(HELP_KEYS) == set(COMMANDS)
    for name, needles in HELP_KEYS.items():
        assert main([name, "--help"]) == 0, name
        out = capsys.readouterr().out
        assert f"landmark-tl {name}" in out, name
        for needle in needles:
            assert needle in out, (name, needle)


@pytest.mark.slow
def test_train_is_a_function_and_every_command_runs_as_python_m():
    """The public surface after the re-layout: ``landmark_tl.train`` is the function (no
    callable module), and ``python -m landmark_tl.<command>`` still runs each command."""
    from landmark_tl.training.run import train

    assert landmark_tl.train is train
    for name in COMMANDS:
        done = subprocess.run(
            [sys.executable, "-m", f"landmark_tl.{name}", "--help"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert f"landmark-tl {name}" in done.stdout, name


def test_cfg_job_prints_the_composed_config_of_a_command(capsys):
    assert main(["predict", "run=r", "inputs=[a.png,b.png]", "top_k=5", "--cfg", "job"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed == {"run": "r", "inputs": ["a.png", "b.png"], "top_k": 5, "out": None}


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=study_table1", "strategy=hierarchical"],
        ["+approach=head_swap_category_first", "trainer=cpu", "strategy.stages.category.lr=0.01"],
        ["recipe=timm", "backbone=efficientnet_b0", "+trainer.gradient_clip_val=1"],
    ],
)
def test_compose_equals_what_the_command_line_composes(capsys, overrides):
    assert main(["train", *overrides, "--cfg", "job"]) == 0
    from_command_line = to_train_config(OmegaConf.create(capsys.readouterr().out))
    composed = landmark_tl.compose(overrides)
    assert isinstance(composed, TrainConfig)
    assert composed == from_command_line
    assert composed != landmark_tl.compose()  # the presets took effect


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["trian", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err and "Traceback" not in err
    assert main([]) == 2  # no command: the usage, exit 2
    assert "usage: landmark-tl <command>" in capsys.readouterr().out
    assert main(["--help"]) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["predict", "run=r", "inputs=x", "strategy=hierarchical"], "Could not override"),
        (["report", "runs=r", "data.root=/x"], "Key 'data' not in 'ReportArgs'"),
        (["train", "run=some/run"], "Could not override 'run'"),
        (["export", "run=r"], "format= required"),
        (["train", "seed=1", "--no-such-flag"], "landmark-tl train --help"),
        (["train", "seed=[1,"], "seed=[1,"),
    ],
    ids=[
        "train-key-to-predict",
        "data-key-to-report",
        "predict-key-to-train",
        "missing",
        "bad-flag",
        "bad-syntax",
    ],
)
def test_a_key_of_the_wrong_kind_exits_2_naming_it(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err


def test_a_config_problem_exits_1_with_its_message(capsys, tmp_path):
    argv = ["train", "trainer.num_nodes=0", f"hydra.run.dir={tmp_path / 'run'}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "trainer.num_nodes=0: must be >= 1" in err and "Traceback" not in err


def test_completion_offers_commands_then_each_commands_keys(capsys, monkeypatch):
    monkeypatch.setenv("COMP_LINE", "landmark-tl pre")
    assert main(["-sc", "query=bash"]) == 0
    assert capsys.readouterr().out.split() == ["predict"]
    monkeypatch.setenv("COMP_LINE", "landmark-tl predict to")
    assert main(["-sc", "query=bash"]) == 0
    assert "top_k=" in capsys.readouterr().out.split()
    monkeypatch.setenv("COMP_LINE", "landmark-tl train strategy=hier")
    assert main(["-sc", "query=bash"]) == 0
    assert "strategy=hierarchical" in capsys.readouterr().out.split()
    assert main(["-sc", "install=bash"]) == 0
    assert "complete -o nospace -o default -F hydra_bash_completion landmark-tl" in (
        capsys.readouterr().out
    )


CHECK_IMPORTS = """
import logging, sys, warnings
import landmark_tl.commands.cli
print(sorted(m for m in ("torch", "timm", "lightning", "hydra") if m in sys.modules))
import hydra, lightning.pytorch, mlflow, timm, torch  # what they set up themselves
def state():
    loggers = ("", "py.warnings", "lightning", "lightning.pytorch", "lightning.fabric")
    return list(warnings.filters), [logging.getLogger(n).handlers[:] for n in loggers]
before = state()
import landmark_tl.training.run, landmark_tl.training.fit
import landmark_tl.models.strategies.linear_probe
print(before == state())
"""


def test_importing_changes_no_filters_and_the_cli_loads_no_torch():
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "True"]  # --help and --version stay fast
    assert landmark_tl.compose().extras.quiet  # library notices go to train.log by default


def test_version_and_top_level_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"landmark-tl {landmark_tl.__version__}\n"
    assert main(["--help"]) == 0
    assert "--verbose" in capsys.readouterr().out


def test_help_lists_config_groups_without_internal_schemas(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "strategy: arcface, feature_chain, head_swap, hierarchical, hierarchical_probe, " in out
    assert "_schema" not in out and "trainer: auto, cpu, gpu" in out
