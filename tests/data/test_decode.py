"""Decoding one image: every mode to 8-bit RGB, transparency on white, EXIF orientation."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from landmark_tl.data.decode import load_rgb


def save_mode(path: Path, mode: str) -> tuple[int, int, int]:
    """Save a 2×1 image in ``mode``; return the RGB expected for its first pixel."""
    if mode == "P":
        image = Image.new("P", (2, 1), 1)
        image.putpalette([0, 0, 0, 10, 20, 30])
        image.putpixel((0, 0), 0)
        image.save(path, transparency=0)  # index 0 is transparent: composited on white
        return (255, 255, 255)
    values = {
        "L": (77, (77, 77, 77)),
        "LA": ((10, 0), (255, 255, 255)),
        "RGBA": ((10, 20, 30, 0), (255, 255, 255)),
        "CMYK": ((0, 0, 0, 0), (255, 255, 255)),
        "I;16": (65535, (255, 255, 255)),
        "I": (1000, (4, 4, 4)),
        "F": (128.0, (128, 128, 128)),
        "1": (1, (255, 255, 255)),
    }
    value, expected = values[mode]
    Image.new(mode, (2, 1), value).save(path)
    return expected


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("P", ".png"),
        ("L", ".png"),
        ("LA", ".png"),
        ("RGBA", ".png"),
        ("CMYK", ".tiff"),
        ("I;16", ".png"),
        ("I", ".tif"),
        ("F", ".tif"),
        ("1", ".bmp"),
    ],
)
def test_load_rgb_converts_every_mode_to_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"image{suffix}"
    expected = save_mode(path, mode)
    with Image.open(path) as saved:
        assert saved.mode == mode
    image = load_rgb(path)
    assert (image.mode, image.size) == ("RGB", (2, 1))
    assert image.getpixel((0, 0)) == expected


def test_load_rgb_half_transparent_pixels_blend_with_white(tmp_path):
    path = tmp_path / "half.png"
    Image.new("RGBA", (1, 1), (0, 0, 0, 128)).save(path)
    assert load_rgb(path).getpixel((0, 0)) == (127, 127, 127)


def test_load_rgb_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.new("RGB", (16, 8), (0, 0, 255)).save(path, exif=exif)
    with Image.open(path) as raw:
        assert raw.size == (16, 8)
    assert load_rgb(path).size == (8, 16)
