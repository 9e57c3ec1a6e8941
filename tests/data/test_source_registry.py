"""A data source is one module that registers itself (plus, in the package, one YAML):
this file alone adds one (images in one folder, named ``<category>+<landmark>+<name>``) and
reads and trains through ``data=flat``; a YAML on Hydra's search path presets it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import landmark_tl
from landmark_tl.core.errors import ConfigError, UsageError
from landmark_tl.data.catalog import scan_image_folder
from landmark_tl.data.config import DataConfig
from landmark_tl.data.sources import (
    SOURCES,
    Candidate,
    FolderSource,
    ImageSource,
    Listing,
    register_source,
    registered_source,
)
from landmark_tl.training.build import build_source, read_catalog
from tests.conftest import TINY_OVERRIDES


@dataclass
class FlatConfig(DataConfig):
    source: str = "flat"
    separator: str = "+"  # a key of its own: data.separator


@register_source(FlatConfig)
class FlatSource(ImageSource):
    """Every image in the root, its labels in its name."""

    name = "flat"

    def __init__(self, root: str | Path, separator: str = "+") -> None:
        super().__init__(root)
        self.separator = separator

    @classmethod
    def from_config(cls, data: FlatConfig, cache_dir: Path) -> FlatSource:
        return cls(data.required_root(), data.separator)

    def listing(self) -> Listing:
        listing = Listing()
        for path in sorted(self.root.iterdir()):
            category, landmark, _ = path.name.split(self.separator, 2)
            listing.candidates.append(Candidate(path.name, category, landmark))
        return listing


# A preset of the source in a user's config folder (a YAML named as the source belongs in
# the package's conf/data/; without one, registering stores its dataclass as data=flat).
PRESET_YAML = """\
# Images in one folder, named <category>%<landmark>%<name>.
defaults:
  - flat_schema
  - _self_

root: ???
separator: "%"
"""


@pytest.fixture
def flat(tiny_tree: Path, tmp_path: Path) -> list[str]:
    """The tiny tree as a flat folder, and overrides that read it through data=flat."""
    root = tmp_path / "flat"
    root.mkdir()
    for image in tiny_tree.glob("*/*/*"):
        category, landmark = image.parent.parent.name, image.parent.name
        shutil.copy(image, root / f"{category}%{landmark}%{image.name}")
    return [
        *(o for o in TINY_OVERRIDES if not o.startswith("data=")),
        "data=flat",
        f"data.root={root}",
        "data.separator=%",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]


def test_a_source_registered_in_a_test_file_reads_by_name(flat, tiny_tree):
    assert SOURCES["flat"] is FlatSource and registered_source("flat").config is FlatConfig
    config = landmark_tl.compose(flat)
    assert isinstance(config.data, FlatConfig) and config.data.separator == "%"
    source = build_source(config)
    assert isinstance(source, FlatSource) and source.max_pixels == config.data.max_pixels
    catalog, folder = read_catalog(config), scan_image_folder(tiny_tree)
    assert len(catalog.records) == 24 and catalog.hierarchy == folder.hierarchy
    assert catalog.content_digests() == folder.content_digests()


def test_a_yaml_on_the_search_path_presets_a_registered_source(flat, tmp_path):
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "flat_percent.yaml").write_text(PRESET_YAML)
    keep = [o for o in flat if o.startswith(("data.root=", "paths."))]
    preset = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=flat_percent", *keep]
    config = landmark_tl.compose(preset)
    assert isinstance(config.data, FlatConfig) and config.data.separator == "%"
    assert len(read_catalog(config).records) == 24


@pytest.mark.slow
def test_a_source_registered_in_a_test_file_trains_and_its_run_loads(flat, tmp_path):
    metrics = landmark_tl.train(landmark_tl.compose(flat), tmp_path / "run")
    assert metrics["data"]["source"] == "flat"
    assert metrics["data"]["split"] == {"train": 12, "val": 4, "test": 8}
    run = landmark_tl.load_run(tmp_path / "run")  # its saved config names the source again
    assert isinstance(run.config.data, FlatConfig) and run.config.data.separator == "%"


def test_keys_are_typed_and_belong_to_their_source(flat):
    with pytest.raises(UsageError, match="Key 'separator' not in 'FolderConfig'"):
        landmark_tl.compose(["data=folder", "data.separator=%"])
    with pytest.raises(UsageError, match="Key 'manifest' not in 'FlatConfig'"):
        landmark_tl.compose([*flat, "data.manifest=m.csv"])
    choices = r"\['flat', 'folder', 'gldv2', 'manifest', 'shards', 'synthetic'\]"
    with pytest.raises(ConfigError, match=rf"data\.source=nope: no such data source; .*{choices}"):
        landmark_tl.compose(["data.source=nope"])


def test_a_name_registers_one_class():
    with pytest.raises(ValueError, match="data source 'flat' is already registered"):
        register_source(FlatConfig)(FolderSource)
    with pytest.raises(TypeError, match="give its field source a default"):
        register_source(DataConfig)
    assert SOURCES["flat"] is FlatSource
