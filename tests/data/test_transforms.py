"""Preprocessing geometry and the augmentation views."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from landmark_tl.data.transforms import (
    Preprocessing,
    gaussian_noise,
    geometry_transform,
    random_augmentation,
    rotate_edge_fill,
    study_views,
    to_uint8_tensor,
    training_views,
)


def _pre(size: int = 32, crop_pct: float = 0.875, crop_mode: str = "center") -> Preprocessing:
    return Preprocessing((3, size, size), "bicubic", (0.5,) * 3, (0.5,) * 3, crop_pct, crop_mode)


def test_geometry_resizes_then_crops_as_timm_eval():
    image = Image.new("RGB", (100, 50), (10, 20, 30))
    out = to_uint8_tensor(geometry_transform(_pre(32))(image))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[:, 16, 16].tolist() == [10, 20, 30]


def test_geometry_center_crop_keeps_the_centre_of_a_wide_image():
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 60, 100))  # white strip at the far left
    out = to_uint8_tensor(geometry_transform(_pre(32, crop_pct=1.0))(image))
    assert out.float().mean() < 5  # the left strip was cropped away


def test_study_views_are_the_five_of_the_study():
    views = study_views()
    assert list(views) == ["original", "rotate30", "flip_lr", "flip_ud", "noise0.2"]
    x = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    assert torch.equal(views["original"](x), x)
    assert torch.equal(views["flip_lr"](x)[:, :, 0], x[:, :, -1])
    assert torch.equal(views["flip_ud"](x)[:, 0], x[:, -1])
    assert list(training_views("study")) == list(views)
    assert list(training_views("none")) == ["original"]
    assert list(training_views("random")) == ["original"]


def test_rotation_fills_corners_from_the_edges_not_black():
    x = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    x[:, :, :20] = 100  # left half darker
    out = rotate_edge_fill(x, 30)
    assert out.shape == x.shape
    assert out.min() >= 100  # no black fill anywhere, corners included
    assert out[:, 0, 0].tolist() == [100] * 3 and out[:, -1, -1].tolist() == [200] * 3
    assert not torch.equal(out, x)


def test_noise_has_the_requested_variance_and_is_repeatable():
    x = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    noisy = gaussian_noise(x, variance=0.01)
    assert torch.equal(noisy, gaussian_noise(x, variance=0.01))
    std = (noisy.float() / 255 - 128 / 255).std().item()
    assert std == pytest.approx(math.sqrt(0.01), rel=0.05)
    other = x.clone()
    other[0, 0, 0] = 0  # different content, different noise
    assert not torch.equal(gaussian_noise(other, 0.01)[1:], noisy[1:])


def test_random_augmentation_keeps_size_and_dtype_and_varies():
    torch.manual_seed(0)
    x = torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8)
    augment = random_augmentation((48, 48))
    a, b = augment(x), augment(x)
    assert a.shape == b.shape == (3, 48, 48) and a.dtype == torch.uint8
    assert not torch.equal(a, b)
