"""Preprocessing geometry from timm's data config, and augmentation views.

Images are decoded and resized once into uint8 (C, H, W) tensors at the backbone's input
geometry (:func:`geometry_transform`); views and random augmentation act on those tensors;
normalisation happens inside the backbone.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from enum import Enum

import numpy as np
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.transforms import MaybeToTensor, ToTensor
from torchvision import transforms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from landmark_tl.models.backbone import Preprocessing

View = Callable[[torch.Tensor], torch.Tensor]


class Augment(str, Enum):
    """Training-set augmentation."""

    none = "none"  # the original image only
    study = "study"  # the study's five fixed views of every training image
    random = "random"  # torchvision v2 random transforms, drawn anew every epoch


def geometry_transform(pre: Preprocessing) -> Callable[[Image.Image], Image.Image]:
    """timm's eval resize + crop for ``pre``, without tensor conversion and normalisation."""
    full = timm.data.create_transform(
        input_size=pre.input_size,
        interpolation=pre.interpolation,
        mean=pre.mean,
        std=pre.std,
        crop_pct=pre.crop_pct,
        crop_mode=pre.crop_mode,
        is_training=False,
    )
    tensor_steps = (MaybeToTensor, ToTensor, transforms.Normalize)
    return transforms.Compose([t for t in full.transforms if not isinstance(t, tensor_steps)])


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → contiguous uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def rotate_edge_fill(image: torch.Tensor, degrees: float = 30.0) -> torch.Tensor:
    """Rotate about the centre, filling the corners with the nearest edge pixels."""
    _, h, w = image.shape
    pad = math.ceil(max(h, w) * (math.sqrt(2) - 1) / 2) + 1
    padded = F.pad(image[None].float(), (pad, pad, pad, pad), mode="replicate")[0]
    rotated = TF.rotate(padded, degrees, interpolation=v2.InterpolationMode.BILINEAR)
    return rotated[:, pad : pad + h, pad : pad + w].round().clamp(0, 255).to(torch.uint8)


def gaussian_noise(image: torch.Tensor, variance: float = 0.2) -> torch.Tensor:
    """Add zero-mean Gaussian noise of ``variance`` on the [0, 1] scale, clipped.

    The noise is seeded by the image content, so a view is the same every time it is made.
    """
    seed = zlib.crc32(image.numpy().tobytes())
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    noisy = image.float() / 255.0 + noise * math.sqrt(variance)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def original(image: torch.Tensor) -> torch.Tensor:
    """The image as it is."""
    return image


def study_views(noise_variance: float = 0.2) -> dict[str, View]:
    """The study's five fixed views: original, 30° rotation, LR flip, UD flip, noise.

    Names carry the parameters, so they can key cached features.
    """
    return {
        "original": original,
        "rotate30": rotate_edge_fill,
        "flip_lr": lambda x: x.flip(-1),
        "flip_ud": lambda x: x.flip(-2),
        f"noise{noise_variance:g}": lambda x: gaussian_noise(x, noise_variance),
    }


def seeded_random_views(count: int, size: tuple[int, int], seed: int = 0) -> dict[str, View]:
    """``count`` random-augmentation views, each repeatable: view k of an image is drawn
    with a generator seeded by (seed, k, image content)."""
    augment = random_augmentation(size)

    def view(k: int) -> View:
        def draw(image: torch.Tensor) -> torch.Tensor:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(zlib.crc32(image.numpy().tobytes(), seed * 1000 + k))
                return augment(image)

        return draw

    return {f"random{k}-seed{seed}": view(k) for k in range(count)}


def training_views(
    augment: Augment | str,
    noise_variance: float = 0.2,
    random_views: int = 0,
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
) -> dict[str, View]:
    """Fixed views of each training image: the study's five for ``study``; for ``random``,
    ``random_views`` seeded random views (0: none fixed, draw anew every epoch); else the
    original."""
    augment = Augment(augment)
    if augment is Augment.study:
        return study_views(noise_variance)
    if augment is Augment.random and random_views > 0:
        return seeded_random_views(random_views, size, seed)
    return {"original": original}


def random_augmentation(size: tuple[int, int]) -> v2.Compose:
    """Random crop, flip, rotation and colour jitter on uint8 tensors, same output size."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(15),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02),
        ]
    )
