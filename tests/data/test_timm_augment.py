"""timm's training augmentation (data.augment=timm) and mixup/cutmix for both tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.data.transforms import Preprocessing, TimmAugmentation, training_views
from landmark_tl.models.optim import Recipe, TwoLevelMixup
from landmark_tl.training.run import train
from tests.conftest import compose_config

PRE = Preprocessing((3, 48, 48), "bicubic", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 1.0, "center")


def _image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)


def test_timm_augmentation_keeps_the_uint8_geometry_and_erases_in_normalised_space():
    image = _image()
    augment = TimmAugmentation(PRE, "rand-m9-mstd0.5-inc1", erasing=1.0)
    out = augment(image)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert not torch.equal(out, image)
    plain = TimmAugmentation(PRE, "", erasing=1.0)  # crop + flip + erasing only
    constant = torch.full((3, 48, 48), 7, dtype=torch.uint8)
    erased = plain(constant)
    mean_colour = (torch.tensor(PRE.mean) * 255).round().to(torch.uint8)
    # timm erases with zeros after normalisation: the backbone then sees the mean colour
    assert (erased.permute(1, 2, 0) == mean_colour).all(-1).any()


def test_seeded_timm_views_are_repeatable_and_keyed_by_their_parameters():
    augment = TimmAugmentation(PRE, "rand-n1-mstd101", erasing=0.25)
    views = training_views("timm", random_views=2, size=(48, 48), seed=1, timm_augment=augment)
    assert list(views) == [
        "timm-rand-n1-mstd101-re0.25-0-seed1",
        "timm-rand-n1-mstd101-re0.25-1-seed1",
    ]
    image = _image()
    first = views["timm-rand-n1-mstd101-re0.25-0-seed1"]
    assert torch.equal(first(image), first(image))


def test_a_bad_auto_augment_policy_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="data.auto_augment=sideways"):
        TimmAugmentation(PRE, "sideways")


def test_mixup_mixes_landmarks_and_derives_consistent_categories():
    parent = torch.tensor([0, 0, 1, 1, 1])  # 5 landmarks in 2 categories
    recipe = Recipe(mixup=1.0, cutmix=1.0, label_smoothing=0.1)
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    landmarks = torch.tensor([0, 2, 4, 1, 3])
    torch.manual_seed(0)
    mixed, soft = TwoLevelMixup(recipe, parent)(images, landmarks)
    assert mixed.dtype == torch.float32 and mixed.min() >= 0.0 and mixed.max() <= 1.0
    assert soft["landmark"].sum(1) == pytest.approx(torch.ones(5))
    by_category = torch.stack([soft["landmark"][:, parent == c].sum(1) for c in (0, 1)], 1)
    assert torch.allclose(soft["category"], by_category)
    assert not torch.equal(mixed[0], images[0].float() / 255)  # paired with image 3
    assert torch.equal(mixed[4], images[4].float() / 255)  # odd one out stays as it is
    assert soft["landmark"][4].argmax() == 3 and soft["landmark"][4].max() == pytest.approx(0.92)


def test_mixup_on_cached_features_is_refused_at_start():
    with pytest.raises(ConfigError, match="optim.mixup/optim.cutmix mix images.*features"):
        validate_config(compose_config("optim.mixup=0.2"))


@pytest.mark.slow
def test_fine_tuning_with_timm_augmentation_and_mixup_trains(tiny_config, tmp_path):
    config = tiny_config(
        "backbone.freeze=none",
        "data.augment=timm",
        "optim.mixup=0.4",
        "optim.cutmix=1.0",
        "optim.label_smoothing=0.1",
        "strategy.stages.joint.epochs=1",
    )
    metrics = train(config, tmp_path / "run")
    assert metrics["stages"][0]["epochs"] == 1
    assert 0.0 <= metrics["test"]["category"]["macro_f1"] <= 1.0


def test_posterize_at_full_magnitude_keeps_one_bit():
    """At magnitude 10 timm asks Pillow to keep 0 bits, which Pillow 13 refuses mid-training."""
    augment = TimmAugmentation(PRE, "rand-m10-inc1", erasing=0.0)
    [rand_augment] = [t for t in augment.pil_steps.transforms if hasattr(t, "ops")]
    posterize = next(op for op in rand_augment.ops if op.name == "PosterizeIncreasing")
    posterize.prob = 1.0
    assert posterize.level_fn(posterize.magnitude, posterize.hparams) == (0,)
    out = posterize(Image.new("RGB", (4, 4), (200, 100, 50)))
    assert np.asarray(out)[0, 0].tolist() == [128, 0, 0]  # the top bit kept
