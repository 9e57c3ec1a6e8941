"""Every default once: YAML is the home of what a config group's options set, the schema of
the rest; ``TrainConfig()`` alone is refused, ``landmark_tl.compose()`` is the default."""

from __future__ import annotations

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields

import pytest
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError

import landmark_tl
from landmark_tl.config import schema
from landmark_tl.config.schema import CONFIG_DIR, ConfigError, TrainConfig

# The groups whose dataclass is the config schema alone (strategy and optim are also the
# library's argument objects: their YAML chooses over neutral defaults, see config/schema.py).
GROUPS = {
    "data": schema.DataConfig,
    "backbone": schema.BackboneConfig,
    "head": schema.HeadConfig,
    "trainer": schema.TrainerConfig,
    "features": schema.FeaturesConfig,
    "paths": schema.PathsConfig,
}


def _python_default(field):
    if field.default is not NO_DEFAULT:
        return field.default
    return field.default_factory() if field.default_factory is not NO_DEFAULT else MISSING


def _options(group: str) -> dict[str, dict]:
    options = {}
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        values = OmegaConf.to_container(OmegaConf.load(path))
        values.pop("defaults", None)
        options[path.stem] = values
    return options


def _default_option(group: str) -> str:
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml").defaults)
    return next(d[group] for d in defaults if isinstance(d, dict) and group in d)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_default_has_one_home(group):
    options = _options(group)
    set_by_all = set.intersection(*(set(values) for values in options.values()))
    chosen = options[_default_option(group)]
    for field in fields(GROUPS[group]):
        default = _python_default(field)
        if field.name in set_by_all:  # every option sets it: YAML is its home
            assert default == MISSING, f"{group}.{field.name}: set by every option's YAML"
        else:  # the schema is its home: the default option does not restate it
            assert field.name not in chosen, f"{group}.{field.name}: set in schema and YAML"


def test_compose_of_nothing_is_the_python_default_and_the_yaml_values():
    config = landmark_tl.compose([])
    assert isinstance(config, TrainConfig)
    assert config == landmark_tl.compose(())  # the same, however it is asked for
    head = OmegaConf.load(CONFIG_DIR / "head" / "mlp.yaml")
    assert (config.head.hidden, config.head.dropout) == (list(head.hidden), head.dropout)
    assert config.strategy.monitor == OmegaConf.load(
        CONFIG_DIR / "strategy" / "multi_output.yaml"
    ).get("monitor")
    assert config.optim.label_smoothing == 0.1  # optim=heads over the study recipe


def test_a_train_config_without_the_yaml_is_refused_naming_compose():
    with pytest.raises(ConfigError, match=r"data\.source.*landmark_tl\.compose"):
        TrainConfig()


@pytest.mark.parametrize("source", sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")))
def test_a_source_yaml_restates_no_default_of_its_config(source):
    """A data source's own keys have their default in its config dataclass; its YAML names
    the schema first and marks data.root required (???) where the source reads files."""
    from landmark_tl.data.sources import registered_source

    registered = registered_source(source)
    values = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "data" / f"{source}.yaml"))
    assert values.pop("defaults") == [f"{source}_schema", "_self_"]
    assert values == ({"root": MISSING} if registered.source.needs_root else {})
    assert landmark_tl.compose([f"data={source}", "data.root=/d"]).data == registered.config(
        root="/d"
    )


def test_a_config_yaml_of_the_flat_data_schema_still_loads(tmp_path):
    """Before sources registered their own keys, every config.yaml held all of them."""
    from landmark_tl.config.schema import to_train_config
    from landmark_tl.data.sources.folder import FolderConfig

    config = landmark_tl.compose(["data=folder", "data.root=/images"])
    saved = OmegaConf.to_container(OmegaConf.structured(config))
    flat = {
        "manifest": "manifest.csv",
        "hierarchy": None,
        "columns": {"path": "path", "landmark": "landmark", "category": "category"},
        "clean": True,
        "images_per_landmark": 14,
        "image_size": 224,
        "synthetic_seed": 0,
    }
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml({**saved, "data": {**saved["data"], **flat}}))
    loaded = to_train_config(OmegaConf.load(path))
    assert isinstance(loaded.data, FolderConfig) and loaded == config
    path.write_text(OmegaConf.to_yaml({**saved, "data": {**saved["data"], "colour": "red"}}))
    with pytest.raises(ConfigKeyError, match="Key 'colour' not in 'FolderConfig'"):
        to_train_config(OmegaConf.load(path))
