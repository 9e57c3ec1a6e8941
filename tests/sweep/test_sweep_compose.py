"""A multirun's job configs composed once per distinct set of config-group choices equal
Hydra's own compose of each job (landmark_tl.sweep.compose)."""

from __future__ import annotations

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from landmark_tl.config.schema import CONFIG_MODULE, register_configs
from landmark_tl.sweep.compose import CheapComposer, remember_sweep_configs

JOBS = [
    ["+approach=hierarchical", "seed=0"],
    ["+approach=hierarchical", "seed=2", "strategy.lr=0.01", "+trainer.gradient_clip_val=1"],
    ["seed=3", "+approach=hierarchical", "head.dropout=0.2"],  # same groups, another order
    ["+approach=linear_probe", "seed=1", "data.split.seed=4", "head.hidden=[16,8]"],
    ["data=folder", "data.root=/somewhere", "hydra.job.chdir=false"],  # a hydra value override
    ["~logger"],  # a deletion: Hydra's full compose
    ["seed=5"],
]


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(
            "train",
            ["experiment=study_table1", f"paths.output_dir={tmp_path_factory.mktemp('out')}"],
            run_mode=RunMode.MULTIRUN,
        )
        yield loader, master


def test_cheap_compose_equals_hydras_compose_of_every_job(loader):
    loader, master = loader
    cheap = CheapComposer(loader.load_sweep_config, loader.repository)
    for overrides in JOBS:
        expected = loader.load_sweep_config(master, overrides)
        got = cheap(master, overrides)
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected), overrides
        assert list(got.hydra.overrides.task) == [o for o in overrides if "hydra." not in o]
    # hierarchical (x3), linear_probe, data=folder (with the hydra value), seed only
    assert len(cheap.bases) == 4


def test_a_bad_value_fails_as_in_hydra(loader):
    loader, master = loader
    cheap = CheapComposer(loader.load_sweep_config, loader.repository)
    for compose in (loader.load_sweep_config, cheap):
        with pytest.raises(ConfigCompositionException, match="no_such_key"):
            compose(master, ["seed=1", "no_such_key=3"])


def test_the_launchers_request_gets_the_sweepers_config_once(loader, monkeypatch):
    loader, master = loader
    monkeypatch.setattr(loader, "load_sweep_config", loader.load_sweep_config)  # undone after
    remember_sweep_configs(loader)
    first = loader.load_sweep_config(master, JOBS[1])
    again = loader.load_sweep_config(master, JOBS[1])
    assert OmegaConf.to_yaml(first) == OmegaConf.to_yaml(again) and first is not again
    assert loader.load_sweep_config(master, JOBS[1]) is not again  # composed afresh
