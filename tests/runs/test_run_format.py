"""A finished run records what produced it, loads offline whatever its weight source, and a
run dir of another format is refused with both format numbers."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from omegaconf import OmegaConf

import landmark_tl
from landmark_tl.models import backbone as backbone_module
from landmark_tl.models.backbone import WeightsSource, create_backbone, save_weights_file
from landmark_tl.runs.rundir import BACKBONE_WEIGHTS, RUN_FORMAT, MalformedRunError
from landmark_tl.serving.inference import backbone_to_load


def test_metrics_record_versions_commit_device_and_command(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["run_format"] == RUN_FORMAT
    record = metrics["provenance"]
    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["landmark_tl"] == landmark_tl.__version__
    assert {"timm", "lightning"} <= set(record["versions"])
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])  # run from a checkout
    assert record["device"].startswith("cpu") and record["command"]


def _no_network(*args, **kwargs):
    raise AssertionError("the network was asked for")


@pytest.mark.slow
def test_a_frozen_file_backbone_run_loads_without_the_file(tiny_config, tmp_path, monkeypatch):
    weights = tmp_path / "lite0.safetensors"
    save_weights_file(create_backbone(weights="none", input_size=(3, 64, 64)), weights)
    config = tiny_config("backbone.weights=file", f"backbone.weights_file={weights}")
    run = tmp_path / "run"
    landmark_tl.train(config, run)
    assert (run / BACKBONE_WEIGHTS).is_file()  # the run keeps what its checkpoints leave out
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    before = landmark_tl.load_run(run).predict(image)[0]

    weights.unlink()
    monkeypatch.setattr(backbone_module, "hub_reachable", _no_network)
    after = landmark_tl.load_run(run).predict(image)[0]
    assert after.landmark == before.landmark
    assert after.landmark_prob == pytest.approx(before.landmark_prob, abs=1e-6)

    (run / BACKBONE_WEIGHTS).unlink()  # and the original is gone too: say which file
    with pytest.raises(MalformedRunError, match=rf"backbone.weights_file={weights}"):
        landmark_tl.load_run(run)


def test_hub_backbones_load_from_the_checkpoint_or_the_kept_copy(tmp_path):
    config = landmark_tl.compose(["backbone=efficientnet_b0"])
    assert config.backbone.weights is WeightsSource.hub
    fine_tuned = backbone_to_load(config, {"state_dict": {}}, tmp_path, {})
    assert fine_tuned.weights is WeightsSource.none  # its weights are in the checkpoint
    frozen = {"state_dict": {}, "frozen_backbone": {"name": "efficientnet_b0"}}
    (tmp_path / BACKBONE_WEIGHTS).write_bytes(b"")
    kept = backbone_to_load(config, frozen, tmp_path, {"run_format": RUN_FORMAT})
    assert kept.weights is WeightsSource.file
    assert kept.weights_file == str(tmp_path / BACKBONE_WEIGHTS)
    (tmp_path / BACKBONE_WEIGHTS).unlink()
    with pytest.raises(MalformedRunError, match="hub weights of efficientnet_b0"):
        backbone_to_load(config, frozen, tmp_path, {"run_format": RUN_FORMAT})


def _copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("*.png", "lightning_logs"))
    return run


def test_a_run_of_a_newer_format_is_refused_naming_both(trained, tmp_path):
    run = _copy(trained, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "run_format": RUN_FORMAT + 7}))
    with pytest.raises(MalformedRunError, match=rf"run format {RUN_FORMAT + 7} was written by a"):
        landmark_tl.load_run(run)


def test_an_older_run_this_version_cannot_read_says_its_format(trained, tmp_path):
    run = _copy(trained, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["run_format"]  # as runs of format 1 were written
    (run / "metrics.json").write_text(json.dumps(metrics))
    config = OmegaConf.load(run / "config.yaml")
    config.strategy.temperature = 2.0  # an option no strategy of this version takes
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    message = rf"config.yaml: does not match .*run format 1; this landmark_tl writes .*{RUN_FORMAT}"
    with pytest.raises(MalformedRunError, match=message):
        landmark_tl.load_run(run)
