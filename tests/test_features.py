"""The feature cache: keys, damage detection, concurrency, and same results as no cache."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from landmark_tl.data.features import (
    FeatureCache,
    decode_entry,
    encode_entry,
    encoder_key,
    view_features,
)
from landmark_tl.io import file_digest
from landmark_tl.models.backbone import create_backbone
from landmark_tl.train import train


def _backbone(**kwargs):
    torch.manual_seed(0)
    return create_backbone("resnet18", weights="none", input_size=(3, 32, 32), **kwargs)


def test_encoder_key_changes_with_name_weights_and_preprocessing_only():
    base = encoder_key(_backbone())
    assert encoder_key(_backbone()) == base  # same inputs, same key
    assert encoder_key(_backbone(freeze="none")) == base  # freezing does not change features
    changed = _backbone()
    with torch.no_grad():
        next(changed.model.parameters()).add_(1e-3)
    assert encoder_key(changed) != base  # weights
    assert encoder_key(_backbone(mean=(0.1, 0.1, 0.1))) != base  # preprocessing
    assert (
        encoder_key(create_backbone("resnet10t", weights="none", input_size=(3, 32, 32))) != base
    )  # architecture


def test_image_digest_follows_content_not_name(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")
    assert file_digest(a) == file_digest(b) != file_digest(c)


def test_entry_paths_differ_by_view_and_image(tmp_path):
    cache = FeatureCache(tmp_path, "enc")
    paths = {cache.path(d, v) for d in ("aa11", "bb22") for v in ("original", "noise0.2")}
    assert len(paths) == 4
    assert FeatureCache(tmp_path, "other").path("aa11", "original") not in paths


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "empty"])
def test_damaged_entries_are_detected_and_recomputed(tmp_path, damage):
    cache = FeatureCache(tmp_path, "enc")
    feature = torch.arange(8, dtype=torch.float32)
    cache.save("abcd", "original", feature)
    path = cache.path("abcd", "original")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-6]
    elif damage == "flip":
        data[12] ^= 0xFF
    elif damage == "magic":
        data[0:5] = b"XXXXX"
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert cache.load("abcd", "original") is None
    assert not path.exists()  # removed, so the next run rewrites it
    calls = []

    def decode(indices):
        calls.append(list(indices))
        return torch.zeros(len(indices), 3, 8, 8, dtype=torch.uint8)

    backbone = _backbone()
    out = view_features(backbone, ["abcd"], {"original": lambda x: x}, decode, cache=cache)
    assert calls == [[0]] and out.shape == (1, 512)
    assert torch.equal(cache.load("abcd", "original"), out[0])


def test_only_missing_views_are_computed(tmp_path):
    cache = FeatureCache(tmp_path, "enc")
    backbone = _backbone()
    views = {"original": lambda x: x, "flip_lr": lambda x: x.flip(-1)}
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    decoded = []

    def decode(indices):
        decoded.append(list(indices))
        return images[list(indices)]

    first = view_features(
        backbone, ["d0", "d1", "d2"], {"original": views["original"]}, decode, cache=cache
    )
    cache.path("d1", "original").unlink()
    both = view_features(backbone, ["d0", "d1", "d2"], views, decode, cache=cache)
    assert decoded == [[0, 1, 2], [0, 1, 2]]  # every image lacks flip_lr
    assert torch.allclose(both[0::2], first, atol=1e-5)  # row i*V + v
    again = view_features(backbone, ["d0", "d1", "d2"], views, decode, cache=cache)
    assert len(decoded) == 2 and torch.equal(again, both)  # all hits, nothing decoded


def _write_entry(args: tuple[str, int]) -> None:
    root, seed = args
    cache = FeatureCache(root, "enc")
    for _ in range(30):
        cache.save("shared", "original", torch.full((256,), float(seed)))


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_write_entry, [(str(tmp_path), s) for s in range(4)])
    cache = FeatureCache(tmp_path, "enc")
    entry = cache.load("shared", "original")
    assert entry is not None and entry.shape == (256,) and len(set(entry.tolist())) == 1
    leftovers = [p for p in Path(cache.dir).rglob("*") if p.is_file()]
    assert leftovers == [cache.path("shared", "original")]  # no temporary files left behind


def test_entry_round_trip():
    feature = torch.randn(17)
    assert torch.equal(decode_entry(encode_entry(feature)), feature)


def test_cached_and_uncached_training_give_the_same_metrics(tiny_config, tmp_path):
    first = train(tiny_config("data.augment=study"), tmp_path / "cold")
    from_cache = train(tiny_config("data.augment=study"), tmp_path / "warm")
    on_the_fly = train(tiny_config("data.augment=study", "features.cache=false"), tmp_path / "none")
    assert first["test"] == from_cache["test"]
    for task in ("category", "landmark"):
        for key in ("macro_f1", "accuracy"):
            assert on_the_fly["test"][task][key] == pytest.approx(
                first["test"][task][key], abs=1e-6
            )


def test_multirun_callback_fills_the_cache_once_before_jobs(tiny_tree, tmp_path):
    from hydra import compose, initialize_config_dir

    from landmark_tl.callbacks import WarmFeatureCache
    from landmark_tl.config import register_configs
    from tests.conftest import CONF_DIR, TINY_OVERRIDES

    register_configs()
    overrides = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"paths.cache_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    WarmFeatureCache().on_multirun_start(cfg)
    entries = list((tmp_path / "features").rglob("*.f32"))
    assert len(entries) == 24  # every image of the tiny tree, original view
    WarmFeatureCache().on_multirun_start(cfg)  # a second multirun only reads
    assert sorted((tmp_path / "features").rglob("*.f32")) == sorted(entries)
