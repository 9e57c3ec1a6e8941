"""The data module: labels, split sizes, views, and frozen features."""

from __future__ import annotations

import pytest
import torch

from landmark_tl.data.datamodule import LandmarkDataModule
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.splits import SplitSpec
from landmark_tl.models.backbone import create_backbone


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("resnet18", weights="none", input_size=(3, 32, 32))


def _module(tiny_tree, backbone, store_dir=None, **kwargs) -> LandmarkDataModule:
    if "feature_encoder" in kwargs:
        kwargs["feature_store"] = FeatureStore(store_dir, "enc")
    dm = LandmarkDataModule(
        tiny_tree,
        backbone.preprocessing,
        split=SplitSpec(1, 2, seed=0),
        batch_size=4,
        num_workers=0,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def test_batches_carry_uint8_images_and_both_labels(tiny_tree, backbone):
    dm = _module(tiny_tree, backbone)
    assert dm.hierarchy.num_categories == 2 and dm.hierarchy.num_landmarks == 4
    x, category, landmark = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    parents = dm.hierarchy.parent_tensor()
    assert torch.equal(parents[landmark], category)
    sizes = {split: len(dm.datasets[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 12, "val": 4, "test": 8}  # 4 landmarks x (3, 1, 2)


def test_test_records_match_test_labels_in_order(tiny_tree, backbone):
    dm = _module(tiny_tree, backbone)
    records = dm.records("test")
    labels = [int(lm) for _, _, batch in dm.test_dataloader() for lm in batch]
    assert [dm.hierarchy.landmark_index(r.category, r.landmark) for r in records] == labels


def test_study_augmentation_gives_five_views_of_each_training_image(tiny_tree, backbone):
    dm = _module(tiny_tree, backbone, augment="study")
    assert len(dm.datasets["train"]) == 5 * 12
    assert len(dm.datasets["val"]) == 4  # evaluation uses the original only
    views = [dm.datasets["train"][i][0] for i in range(5)]
    assert torch.equal(views[2], views[0].flip(-1))
    assert torch.equal(views[3], views[0].flip(-2))


def test_frozen_features_replace_images(tiny_tree, backbone, tmp_path):
    dm = _module(tiny_tree, backbone, tmp_path, augment="study", feature_encoder=backbone)
    x, category, landmark = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 512) and x.dtype == torch.float32
    plain = _module(tiny_tree, backbone)
    image, _, _ = plain.datasets["val"][0]
    with torch.no_grad():
        expected = backbone.eval()(image[None])[0]
    assert torch.allclose(dm.datasets["val"][0][0], expected, atol=1e-5)


def test_random_augmentation_with_frozen_features_needs_cached_views(tiny_tree, backbone, tmp_path):
    with pytest.raises(ValueError, match="features.random_views"):
        _module(tiny_tree, backbone, tmp_path, augment="random", feature_encoder=backbone)
    dm = _module(
        tiny_tree, backbone, tmp_path, augment="random", feature_encoder=backbone, random_views=3
    )
    assert len(dm.datasets["train"]) == 3 * 12
    first_views = torch.stack([dm.datasets["train"][i][0] for i in range(3)])
    assert torch.pdist(first_views).min() > 0  # three distinct views


def test_random_augmentation_draws_new_views(tiny_tree, backbone):
    dm = _module(tiny_tree, backbone, augment="random")
    torch.manual_seed(0)
    first, second = dm.datasets["train"][0][0], dm.datasets["train"][0][0]
    assert first.shape == (3, 32, 32) and not torch.equal(first, second)


def test_images_stream_through_loader_workers(tiny_tree, backbone):
    """Nothing holds the decoded images: two workers decode a batch at a time, and the
    batches are those of the in-process loader."""
    streamed = _module(tiny_tree, backbone)
    streamed.num_workers = 2
    in_process = [x for x, _, _ in _module(tiny_tree, backbone).val_dataloader()]
    held = [v for v in vars(streamed.datasets["val"]).values() if isinstance(v, torch.Tensor)]
    assert sum(t.numel() for t in held) == 2 * len(streamed.datasets["val"])  # labels only
    loader = streamed.val_dataloader()
    assert loader.num_workers == 2
    assert all(torch.equal(a, b) for (a, _, _), b in zip(loader, in_process, strict=True))
