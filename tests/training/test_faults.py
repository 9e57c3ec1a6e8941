"""The fault suite: messy inputs and failures, each with its exact answer.

Other files test more (catalog: truncated/garbage/zero-byte/AVIF/wrong depth/empty folders/
odd names; splits: bad specs and manifests; features: damaged entries; backbone: weights of
another architecture). This file adds the rest of the list in issue 7.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from PIL import Image

from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.core.io import atomic_write_text
from landmark_tl.data.catalog import scan_image_folder
from landmark_tl.data.decode import load_rgb
from landmark_tl.data.synthetic.generate import ensure_synthetic_dataset
from tests.conftest import TINY_OVERRIDES, compose_config


def _tree(tmp_path: Path, images: int = 3) -> Path:
    """A valid 2 x 2 tree of small PNGs, different bytes everywhere."""
    root = tmp_path / "tree"
    for c, category in enumerate(("Gothic", "Pyramids")):
        for lm, landmark in enumerate(("A", "B")):
            folder = root / category / landmark
            folder.mkdir(parents=True)
            for i in range(images):
                Image.new("RGB", (16, 16), (60 * c, 60 * lm, 20 * i)).save(folder / f"{i}.png")
    return root


def _problem(catalog, name: str) -> str:
    reasons = [p.reason for p in catalog.problems if p.path.name == name]
    assert len(reasons) == 1, f"{name} not reported: {catalog.problems}"
    return reasons[0]


def test_one_pixel_image_is_kept(tmp_path):
    root = _tree(tmp_path)
    Image.new("RGB", (1, 1), (1, 2, 3)).save(root / "Gothic" / "A" / "dot.png")
    catalog = scan_image_folder(root)
    assert "dot.png" in {r.path.name for r in catalog.records} and not catalog.problems


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # red in CMYK
    image = load_rgb(path)
    assert image.mode == "RGB" and image.getpixel((4, 4))[0] > 200


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "palette.png"
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(path, transparency=0)
    image = load_rgb(path)
    assert image.getpixel((0, 0)) == (255, 0, 0) and image.getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    path = tmp_path / "deep.png"
    Image.new("I;16", (4, 4), 65535).save(path)
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_truncated_jpeg_is_skipped_and_reported(tmp_path):
    root = _tree(tmp_path)
    path = root / "Gothic" / "A" / "cut.jpg"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:300])
    reason = _problem(scan_image_folder(root), "cut.jpg")
    assert "truncated" in reason.lower() or "broken" in reason.lower() or "error" in reason.lower()


def test_decompression_bomb_is_refused_by_the_guard(tmp_path):
    root = _tree(tmp_path)
    Image.new("1", (20000, 20000)).save(root / "Gothic" / "A" / "bomb.png")  # 48 kB file
    assert "decompression bomb" in _problem(scan_image_folder(root), "bomb.png")


def test_symlink_loop_is_reported_not_followed(tmp_path):
    root = _tree(tmp_path)
    os.symlink("loop.png", root / "Gothic" / "A" / "loop.png")
    reason = _problem(scan_image_folder(root), "loop.png")
    assert "unreadable entry" in reason and "symbolic links" in reason


def test_unreadable_permission_is_reported(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    locked = root / "Gothic" / "B" / "1.png"
    real_read = Path.read_bytes

    def guarded(path):  # chmod 000 does not stop root, so deny it here
        if path == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    assert "Permission denied" in _problem(scan_image_folder(root), "1.png")


def test_same_bytes_under_two_landmarks_are_both_skipped(tmp_path):
    root = _tree(tmp_path)
    src = root / "Gothic" / "A" / "0.png"
    (root / "Pyramids" / "B" / "copy.png").write_bytes(src.read_bytes())
    catalog = scan_image_folder(root)
    assert "ambiguous label" in _problem(catalog, "copy.png")
    assert "Gothic/A" in _problem(catalog, "0.png")
    assert len(catalog.records) == 12 - 1  # the original left too; the copy never counted


def test_duplicate_within_a_landmark_keeps_the_first(tmp_path):
    root = _tree(tmp_path)
    (root / "Gothic" / "A" / "zz.png").write_bytes((root / "Gothic" / "A" / "0.png").read_bytes())
    catalog = scan_image_folder(root)
    assert "duplicate of 0.png" in _problem(catalog, "zz.png")
    assert "0.png" in {r.path.name for r in catalog.records if r.landmark == "A"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("strategy.stages.joint.lr=-0.1", "strategy.stages.joint.lr=-0.1"),
        ("head.dropout=1.0", "head.dropout=1.0"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("strategy.stages.joint.epochs=0", "strategy.stages.joint.epochs=0"),
        ("features.batch_size=-1", "features.batch_size=-1"),
        ("trainer.channels_last=sometimes", "trainer.channels_last=sometimes"),
        ("features.cache=sometimes", "features.cache=sometimes"),
        ("backbone.freeze=none features.cache=true", "features.cache=true needs a frozen"),
    ],
)
def test_invalid_config_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        validate_config(compose_config(*TINY_OVERRIDES, "data.root=/x", *override.split()))


def test_unknown_strategy_and_backbone_are_refused():
    from landmark_tl.core.errors import UsageError

    with pytest.raises(UsageError, match="strategy"):
        compose_config("strategy=sideways")
    from landmark_tl.training.build import build_backbone

    with pytest.raises(ValueError, match="backbone.name='nonet' is not a timm model"):
        build_backbone(compose_config("backbone.name=nonet", "backbone.weights=none"))


def test_disk_full_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(fd, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"could not write .*metrics.json: No space left"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_interrupted_generation_leaves_no_tree_and_is_redone(tmp_path, monkeypatch):
    from landmark_tl.data.synthetic import generate

    calls = {"n": 0}
    real = generate._write_image

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "_write_image", interrupted)
    subset = {"Gothic": ["Milan Cathedral"]}
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path, images_per_landmark=8, image_size=32, categories=subset)
    assert list(tmp_path.iterdir()) == []  # the temporary tree was removed too
    monkeypatch.setattr(generate, "_write_image", real)
    root = ensure_synthetic_dataset(
        tmp_path, images_per_landmark=8, image_size=32, categories=subset
    )
    assert len(list(root.rglob("*.png"))) == 8
