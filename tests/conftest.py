"""Shared fixtures: tiny generated image trees and composed configs (CPU, no network)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from landmark_tl.config.schema import CONFIG_DIR, TrainConfig, compose
from landmark_tl.data.synthetic.generate import generate_synthetic_monuments

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` the N workers already fill the cores: one torch thread each (and
    # in the commands they start) instead of N x cores threads fighting over them.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

CONF_DIR = CONFIG_DIR
REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CLASSES = {
    "Gothic": ["Milan Cathedral", "Cologne Cathedral"],
    "Pyramids": ["Pyramid of Giza", "Louvre Pyramid"],
}

# Small and fast: random-init backbone at 64 px, 2 x 2 landmarks, one short stage.
TINY_OVERRIDES = [
    "data=folder",
    "backbone.weights=none",
    "backbone.input_size=[3,64,64]",
    "data.split.val=1",
    "data.split.test=2",
    "data.batch_size=8",
    "data.num_workers=0",  # tiny images decode fastest in-process (workers: own tests)
    "trainer=cpu",
    "strategy.stages.joint.epochs=2",
]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, whatever ran before it in its process
    (under pytest-xdist a worker's earlier files vary from run to run)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 categories × 2 landmarks × 6 images of 64 px."""
    root = tmp_path_factory.mktemp("tiny") / "images"
    generate_synthetic_monuments(
        root, images_per_landmark=6, image_size=64, seed=0, categories=TINY_CLASSES
    )
    return root


def compose_config(*overrides: str) -> TrainConfig:
    """Compose ``conf/train.yaml`` with overrides, as the command line would."""
    return compose(overrides)


@pytest.fixture
def tiny_config(tiny_tree: Path, tmp_path: Path):
    """A factory of tiny TrainConfigs on ``tiny_tree``, caching under tmp_path."""

    def make(*overrides: str) -> TrainConfig:
        return compose_config(
            *TINY_OVERRIDES,
            f"data.root={tiny_tree}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *overrides,
        )

    return make


@pytest.fixture(scope="session")
def trained(tiny_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dir of a finished tiny run (hierarchical), shared by the tests that use one."""
    from landmark_tl.training.run import train

    tmp = tmp_path_factory.mktemp("run")
    config = compose_config(
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.cache_dir={tmp / 'cache'}",
        "strategy=hierarchical",
        "strategy.stages.landmark.epochs=3",
    )
    train(config, tmp / "run")
    return tmp / "run"
