"""Class-balanced training batches (data.sampler=balanced): draw frequencies, epochs, DDP."""

from __future__ import annotations

import shutil
from collections import Counter

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.data.datamodule import LandmarkDataModule, item_landmarks
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.sampling import BalancedSampler
from landmark_tl.data.splits import SplitSpec
from landmark_tl.models.backbone import create_backbone
from landmark_tl.training.run import train
from tests.conftest import compose_config

SKEWED = torch.tensor([0] * 800 + [1] * 150 + [2] * 50)


def _frequencies(sampler: BalancedSampler, epochs: int) -> torch.Tensor:
    draws = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    counts = torch.bincount(SKEWED[torch.tensor(draws)], minlength=3).double()
    return counts / counts.sum()


@pytest.mark.parametrize("power", [1.0, 0.5, 0.0])
def test_landmarks_are_drawn_in_proportion_to_their_count_to_the_one_minus_power(power):
    expected = torch.tensor([800.0, 150.0, 50.0], dtype=torch.float64).pow(1 - power)
    frequencies = _frequencies(BalancedSampler(SKEWED, power, seed=0), epochs=10)
    torch.testing.assert_close(frequencies, expected / expected.sum(), atol=0.02, rtol=0)


def test_each_epoch_draws_anew_and_the_same_epoch_draws_the_same():
    sampler = BalancedSampler(SKEWED, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) != first and len(first) == len(SKEWED)
    sampler.set_epoch(1)
    assert list(sampler) == first


def test_under_data_parallelism_the_ranks_share_out_the_same_draws():
    """Lightning wraps a custom sampler in DistributedSamplerWrapper under DDP; each rank
    draws with the same seed, so the ranks' items are a partition of one balanced draw."""
    ranks = [
        DistributedSamplerWrapper(BalancedSampler(SKEWED, seed=0), num_replicas=2, rank=rank)
        for rank in (0, 1)
    ]
    served = Counter(i for sampler in ranks for i in sampler)
    assert served == Counter(BalancedSampler(SKEWED, seed=0))


@pytest.fixture(scope="module")
def skewed_tree(tiny_tree, tmp_path_factory):
    """The tiny tree with two landmarks cut to 4 images: 3 vs 1 training images at 1/2 split."""
    root = tmp_path_factory.mktemp("skewed") / "images"
    shutil.copytree(tiny_tree, root)
    for landmark in ("Pyramid of Giza", "Louvre Pyramid"):
        for image in sorted((root / "Pyramids" / landmark).iterdir())[:2]:
            image.unlink()
    return root


@pytest.mark.parametrize("frozen", [True, False])
def test_training_loader_balances_images_and_cached_features(skewed_tree, frozen, tmp_path):
    backbone = create_backbone("resnet18", weights="none", input_size=(3, 32, 32))
    dm = LandmarkDataModule(
        skewed_tree,
        backbone.preprocessing,
        split=SplitSpec(1, 2, seed=0),
        batch_size=4,
        num_workers=0,
        sampler="balanced",
        feature_encoder=backbone if frozen else None,
        feature_store=FeatureStore(tmp_path, "enc") if frozen else None,
    )
    dm.setup("fit")
    labels = item_landmarks(dm.datasets["train"])
    assert sorted(Counter(labels.tolist()).values()) == [1, 1, 3, 3]
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, BalancedSampler)
    drawn = []
    for epoch in range(300):
        loader.sampler.set_epoch(epoch)
        drawn += [lm for _, _, landmark in loader for lm in landmark.tolist()]
    frequencies = torch.bincount(torch.tensor(drawn), minlength=4).double() / len(drawn)
    torch.testing.assert_close(frequencies, torch.full((4,), 0.25).double(), atol=0.03, rtol=0)
    assert not isinstance(dm.val_dataloader().sampler, BalancedSampler)  # val, test: in order


class RecordLandmarks(L.Callback):
    """The training items' landmarks, and those of every training batch, per epoch."""

    items: torch.Tensor = torch.zeros(0)
    seen: dict[int, list[int]] = {}

    def on_fit_start(self, trainer, pl_module):
        RecordLandmarks.items = item_landmarks(trainer.datamodule.datasets["train"])
        RecordLandmarks.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        RecordLandmarks.seen.setdefault(trainer.current_epoch, []).extend(batch[2].tolist())


@pytest.mark.slow
def test_fine_tuning_trains_on_the_balanced_draw_of_each_epoch(skewed_tree, tmp_path):
    config = compose_config(
        "data=folder",
        f"data.root={skewed_tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "backbone.weights=none",
        "backbone.input_size=[3,64,64]",
        "backbone.freeze=none",
        "data.split.val=1",
        "data.split.test=2",
        "data.batch_size=4",
        "data.sampler=balanced",
        "trainer=cpu",
        "strategy.stages.joint.epochs=2",
        "seed=5",
        f"+callbacks.record._target_={__name__}.RecordLandmarks",
    )
    train(config, tmp_path / "run")
    items = RecordLandmarks.items
    assert sorted(Counter(items.tolist()).values()) == [1, 1, 3, 3]
    assert set(RecordLandmarks.seen) == {0, 1}
    for epoch, seen in RecordLandmarks.seen.items():
        sampler = BalancedSampler(items, seed=5)
        sampler.set_epoch(epoch)  # what Lightning calls at the start of each epoch
        assert seen == items[torch.tensor(list(sampler))].tolist()


def test_a_negative_balance_power_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"data.balance_power=-1.0: must be >= 0"):
        validate_config(compose_config("data.sampler=balanced", "data.balance_power=-1"))
