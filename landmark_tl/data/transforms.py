"""Preprocessing geometry from timm's data config, and augmentation views.

Images are decoded (in loader workers, when their batch is asked) and resized into uint8
(C, H, W) tensors at the backbone's input geometry (:func:`geometry_transform`); views and
random augmentation act on those tensors; normalisation happens inside the backbone.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import timm
import timm.data
import timm.data.auto_augment
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybeToTensor, ToTensor
from torch import nn
from torchvision import transforms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class Preprocessing:
    """The model's input geometry and normalisation, from timm's resolved data config."""

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        input_size: tuple[int, int, int] | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> Preprocessing:
        """Resolve timm's data config for ``model``; explicit arguments override it."""
        overrides = {"input_size": input_size, "mean": mean, "std": std}
        args = {k: tuple(v) for k, v in overrides.items() if v is not None}
        cfg = timm.data.resolve_data_config(args, model=model)
        return cls(
            input_size=tuple(cfg["input_size"]),
            interpolation=cfg["interpolation"],
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            crop_pct=float(cfg["crop_pct"]),
            crop_mode=cfg.get("crop_mode", "center"),
        )


View = Callable[[torch.Tensor], torch.Tensor]


class Augment(str, Enum):
    """Training-set augmentation."""

    none = "none"  # the original image only
    study = "study"  # the study's five fixed views of every training image
    random = "random"  # torchvision v2 random transforms, drawn anew every epoch
    timm = "timm"  # timm's training transform: crop, flip, RandAugment, random erasing


RANDOM_AUGMENTS = (Augment.random, Augment.timm)  # drawn anew every epoch (or seeded views)


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


def seeded_random_views(
    count: int,
    size: tuple[int, int],
    seed: int = 0,
    augment: View | None = None,
    name: str = "random",
) -> dict[str, View]:
    """``count`` views by ``augment`` (default :func:`random_augmentation`), each
    repeatable: view k of an image is drawn with the generators seeded by (seed, k, image
    content). ``name`` (with the augmentation's parameters) keys them."""
    augment = augment or random_augmentation(size)

    def view(k: int) -> View:
        def draw(image: torch.Tensor) -> torch.Tensor:
            draw_seed = zlib.crc32(image.numpy().tobytes(), seed * 1000 + k)
            # timm's transforms also draw from Python's and NumPy's global generators
            states = random.getstate(), np.random.get_state()
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(draw_seed)
                    random.seed(draw_seed)
                    np.random.seed(draw_seed)
                    return augment(image)
            finally:
                random.setstate(states[0])
                np.random.set_state(states[1])

        return draw

    return {f"{name}{k}-seed{seed}": view(k) for k in range(count)}


def training_views(
    augment: Augment | str,
    noise_variance: float = 0.2,
    random_views: int = 0,
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
    timm_augment: TimmAugmentation | None = None,
) -> dict[str, View]:
    """Fixed views of each training image: the study's five for ``study``; for ``random``
    and ``timm`` (``timm_augment``), ``random_views`` seeded random views (0: none fixed,
    draw anew every epoch); else the original."""
    augment = Augment(augment)
    if augment is Augment.study:
        return study_views(noise_variance)
    if augment is Augment.random and random_views > 0:
        return seeded_random_views(random_views, size, seed)
    if augment is Augment.timm and random_views > 0:
        if timm_augment is None:
            raise ValueError("data.augment=timm needs the backbone's preprocessing")
        return seeded_random_views(random_views, size, seed, timm_augment, timm_augment.name)
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


_POSTERIZE_OPS = {"Posterize", "PosterizeIncreasing", "PosterizeOriginal"}


def _posterize_keeping_a_bit(policy: object) -> None:
    """Make the posterize ops of a timm auto-augment policy keep at least one bit.

    At full magnitude (10; RandAugment's ``mstd`` reaches it now and then) timm's
    increasing posterize asks to keep 0 bits, which Pillow 13 refuses with a ValueError
    that stops training. One bit is the strongest posterize Pillow allows. Only the op
    instances of this policy change, not timm's tables.
    """
    ops = list(getattr(policy, "ops", ()))  # RandAugment, AugMix
    ops += [op for sub in getattr(policy, "policy", ()) for op in sub]  # AutoAugment
    for op in ops:
        if getattr(op, "name", None) in _POSTERIZE_OPS:
            op.aug_fn = _posterize_at_least_one_bit


def _posterize_at_least_one_bit(image: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    return timm.data.auto_augment.posterize(image, max(1, bits_to_keep))


class TimmAugmentation:
    """timm's training transform (``create_transform(is_training=True)``: random resized
    crop, flip, RandAugment/TrivialAugment, random erasing) on uint8 (C, H, W) tensors of
    the backbone's geometry; normalisation stays inside the backbone, so erasing is done
    in normalised space and mapped back."""

    def __init__(
        self, pre: Preprocessing, auto_augment: str = "rand-m9-mstd0.5-inc1", erasing: float = 0.25
    ) -> None:
        try:
            primary, secondary, final = timm.data.create_transform(
                input_size=pre.input_size,
                is_training=True,
                auto_augment=auto_augment or None,
                interpolation=pre.interpolation,
                mean=pre.mean,
                std=pre.std,
                re_prob=erasing,
                separate=True,
            )
        except (AssertionError, KeyError, ValueError) as err:
            raise ValueError(
                f"data.auto_augment={auto_augment}: not a timm auto-augment policy "
                f"({err}); e.g. rand-m9-mstd0.5-inc1 (RandAugment), rand-n1-mstd101 "
                "(TrivialAugment-like: one op, uniform magnitude), augmix-m5-w4-d2"
            ) from err
        self.pil_steps = transforms.Compose([*primary.transforms, *secondary.transforms])
        for step in secondary.transforms:
            _posterize_keeping_a_bit(step)
        self.erasing = next((t for t in final.transforms if isinstance(t, RandomErasing)), None)
        self.mean = torch.tensor(pre.mean).view(-1, 1, 1)
        self.std = torch.tensor(pre.std).view(-1, 1, 1)
        self.name = f"timm-{auto_augment or 'noaa'}-re{erasing:g}-"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        out = to_uint8_tensor(self.pil_steps(TF.to_pil_image(image)))
        if self.erasing is None:
            return out
        normalised = (out.float() / 255.0 - self.mean) / self.std
        erased = self.erasing(normalised) * self.std + self.mean
        return (erased * 255.0).round().clamp(0, 255).to(torch.uint8)
