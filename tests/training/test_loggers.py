"""Where each logger writes in the run dir comes from its YAML's ``run_args``: adding a
logger is one YAML in conf/logger/ (here written to a folder on Hydra's search path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from landmark_tl.core.errors import ConfigError
from landmark_tl.training.loggers import RunLoggers
from tests.conftest import compose_config


class TaggedCSVLogger(CSVLogger):
    """A user's own logger: a CSV log that also keeps a tag it was given."""

    def __init__(self, save_dir: str, name: str, version: str, tag: str = "") -> None:
        super().__init__(save_dir, name=name, version=version)
        self.tag = tag


TOY_YAML = f"""\
toy:
  _target_: {__name__}.TaggedCSVLogger
  run_args:
    save_dir: "{{run_dir}}/toy"
    name: "{{experiment}}"
    version: "{{stage}}"
    tag: "{{run_name}}/{{stage}}/{{run_id}}"
"""


def test_a_logger_added_as_one_yaml_writes_where_its_run_args_say(tmp_path):
    (tmp_path / "conf" / "logger").mkdir(parents=True)
    (tmp_path / "conf" / "logger" / "toy.yaml").write_text(TOY_YAML)
    config = compose_config(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "logger=toy")
    assert list(config.logger) == ["csv", "toy"]
    run_dir = tmp_path / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    csv, toy = RunLoggers(config.logger, run_dir, tmp_path).for_stage("joint")
    assert Path(csv.log_dir) == run_dir / "logs" / "joint"  # conf/logger/csv.yaml
    assert isinstance(toy, TaggedCSVLogger)
    assert Path(toy.log_dir) == run_dir / "toy" / "landmark_tl" / "joint"
    # {run_id} exists only where logger=mlflow opened a tracking run: the argument is left out
    assert toy.tag == ""
    (multirun := tmp_path / "sweep").mkdir()
    (multirun / "multirun.yaml").write_text("{}\n")
    (toy,) = RunLoggers({"toy": config.logger["toy"]}, multirun / "3", tmp_path).for_stage("s1")
    assert Path(toy.log_dir) == multirun / "3" / "toy" / "sweep" / "s1"  # one per multirun


@pytest.mark.parametrize(
    ("run_args", "message"),
    [
        ({"save_dir": "{rundir}"}, r"logger.toy.run_args.save_dir='\{rundir\}': no placeholder "),
        ({"save_dir": "{run_dir"}, r"logger.toy.run_args.save_dir='\{run_dir': .*'\}'"),
        ("{run_dir}", r"logger.toy.run_args='\{run_dir\}': give a mapping"),
    ],
)
def test_bad_run_args_are_refused_naming_the_key(run_args, message, tmp_path):
    spec = {"_target_": "lightning.pytorch.loggers.CSVLogger", "run_args": run_args}
    with pytest.raises(ConfigError, match=message):
        RunLoggers({"toy": spec}, tmp_path, tmp_path)
