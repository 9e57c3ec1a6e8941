"""Decoding one image: upright (EXIF orientation), 8-bit RGB, optionally reduced while it
decodes (JPEG draft), refused before decoding when it has too many pixels; and the checks
around it (AVIF support, strict handling of truncated files)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, features

from landmark_tl.core.io import require_regular_file

AVIF_HINT = (
    "AVIF is not supported by this Pillow; install a Pillow built with AVIF "
    "(features.check('avif') is True) or `pip install pillow-avif-plugin`"
)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})


class ImageTooLargeError(ValueError):
    """An image that would decode to more pixels than ``data.max_pixels`` allows."""


def check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when an image of ``size`` (as it will be decoded)
    has more than ``max_pixels`` pixels (None: no limit)."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height:,} pixels to decode, above "
            f"data.max_pixels={max_pixels}: downscale the image, or raise data.max_pixels"
        )


def load_rgb(
    path: str | Path | BinaryIO,
    *,
    draft: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode an image upright (EXIF orientation applied) as 8-bit RGB.

    ``draft`` (width, height): a JPEG is decoded reduced (by 2, 4 or 8 per side, by the
    decoder, from Pillow's ``Image.draft``) as far as it stays at least that large; other
    formats decode in full. ``max_pixels``: refuse (:class:`ImageTooLargeError`, before
    decoding) an image that would still decode to more pixels than that. Transparent
    pixels are composited on white; 16-bit, 32-bit and float images are scaled to 8 bits.
    Raises whatever Pillow raises for unreadable or truncated files, and OSError for a path
    that is not a regular file (never opened).
    """
    if isinstance(path, str | Path):
        require_regular_file(path)  # a FIFO would block the open forever
    with Image.open(path) as image:
        if draft is not None:
            image.draft(image.mode, draft)  # no effect but on JPEG
        check_pixels(image.size, max_pixels)
        upright = ImageOps.exif_transpose(image)  # a fully decoded copy
    return _to_rgb(upright)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _on_white(image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def _deep_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float grey image to 8 bits.

    ``I;16`` uses the full 16-bit range; ``I`` and ``F`` are read as 8-bit when their values
    fit, as 16-bit when they fit that, and are scaled by their maximum otherwise.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if image.mode.startswith("I;16"):
        peak = 65535.0
    else:
        top = float(values.max(initial=0.0))
        peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
    return Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).round().astype(np.uint8))


def _on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def avif_supported() -> bool:
    """Whether Pillow can decode AVIF here (built in, or through ``pillow-avif-plugin``)."""
    if "avif" in features.modules and features.check_module("avif"):
        return True
    try:
        import pillow_avif  # noqa: F401  (importing registers the plugin with Pillow)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Make Pillow raise on truncated files (another library may have relaxed that)."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
