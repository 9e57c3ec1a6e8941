"""The feature store: keys, shards, damage, kills, concurrency, a full disk, replaced images."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_tl.core.io import bytes_digest, file_digest
from landmark_tl.data.features.extraction import (
    _PassThreads,
    encoder_key,
    fill_store,
    pass_batch_size,
)
from landmark_tl.data.features.store import FeatureRows, FeatureStore, FeatureStoreError
from landmark_tl.models.backbone import create_backbone
from landmark_tl.training.run import train
from tests.conftest import REPO_ROOT

IDENTITY = {"original": lambda x: x}


def _backbone(name: str = "test_convnext", **kwargs):
    torch.manual_seed(0)
    return create_backbone(name, weights="none", input_size=(3, 32, 32), **kwargs)


def _images(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct small PNG images, as stored bytes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _decode(data: bytes, i: int) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def _fill(store, backbone, images, views=IDENTITY, **kwargs):
    digests = [bytes_digest(d) for d in images]
    wanted = {view: range(len(images)) for view in views}
    return fill_store(
        store, backbone, digests, wanted, views, images.__getitem__, _decode, **kwargs
    )


def _read(store: FeatureStore, images: list[bytes], view: str = "original") -> torch.Tensor:
    shard_ids, rows = store.locate(view, [bytes_digest(d) for d in images])
    return FeatureRows(store, shard_ids, rows, budget=0)[np.arange(len(images))]


def _stored_rows(store: FeatureStore) -> int:
    with sqlite3.connect(store.index_path) as db:
        return db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]


def test_encoder_key_changes_with_name_weights_and_preprocessing_only():
    base = encoder_key(_backbone("resnet18"))
    assert encoder_key(_backbone("resnet18")) == base  # same inputs, same key
    assert encoder_key(_backbone("resnet18", freeze="none")) == base  # freezing: same features
    changed = _backbone("resnet18")
    with torch.no_grad():
        next(changed.model.parameters()).add_(1e-3)
    assert encoder_key(changed) != base  # weights
    assert encoder_key(_backbone("resnet18", mean=(0.1, 0.1, 0.1))) != base  # preprocessing
    assert encoder_key(_backbone("resnet10t")) != base  # architecture


def test_image_digest_follows_content_not_name(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")
    assert file_digest(a) == file_digest(b) != file_digest(c)


class _Clock:
    """A clock the test moves by hand: the feature pass's thread choice without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("decode_s", "threads_after"), [(0.001, 2), (0.5, 1)])
def test_the_pass_takes_every_core_once_the_decoding_workers_keep_up(decode_s, threads_after):
    clock, before = _Clock(), torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []

    def batches():
        for _ in range(12):
            clock.now += decode_s  # the wait for the loader workers
            yield None

    try:
        with _PassThreads(workers=1, probe=4, clock=clock) as threads:
            for _ in threads.timed(batches()):
                seen.append(torch.get_num_threads())
                clock.now += 0.1  # the forward pass
        assert seen[:5] == [1] * 5  # beside one worker: one core while it probes
        assert seen[5:] == [threads_after] * 7  # idle workers: every core; busy: stays
        assert torch.get_num_threads() == 2  # restored after the pass
    finally:
        torch.set_num_threads(before)


def test_the_pass_batch_fits_the_cpu_caches_unless_set():
    assert pass_batch_size(torch.device("cuda"), (3, 224, 224)) == 64
    sizes = {px: pass_batch_size("cpu", (3, px, px)) for px in (32, 112, 224, 384, 1024)}
    assert sizes == {32: 64, 112: 32, 224: 8, 384: 3, 1024: 1}


def test_pass_writes_shards_of_rows_equal_to_the_backbone(tmp_path):
    store = FeatureStore(tmp_path, "enc", shard_rows=4)
    backbone, images = _backbone(), _images(10)
    done = _fill(store, backbone, images, batch_size=3)
    assert (done.computed, done.images, done.failed) == (10, 10, {})
    with torch.no_grad():
        expected = backbone.eval()(torch.stack([_decode(d, 0) for d in images]))
    assert torch.allclose(_read(store, images), expected, atol=1e-5)
    shards = sorted(p.name for p in (store.dir / "original").iterdir())
    assert len(shards) == 3 and all(name.endswith(".npy") for name in shards)  # 4 + 4 + 2
    assert FeatureStore(tmp_path, "other").locate("original", [bytes_digest(images[0])])[0][0] < 0
    again = _fill(store, backbone, images)
    assert again.computed == 0  # all found: nothing decoded or computed


def test_float16_store_and_memory_budget(tmp_path):
    images = _images(5)
    store = FeatureStore(tmp_path, "enc", dtype="float16")
    _fill(store, _backbone(), images)
    single = FeatureStore(tmp_path, "enc")
    _fill(single, _backbone(), images)
    half, full = _read(store, images), _read(single, images)
    assert half.dtype == torch.float32 and torch.allclose(half, full, atol=1e-2, rtol=1e-2)
    shard_ids, rows = store.locate("original", [bytes_digest(d) for d in images])
    assert FeatureRows(store, shard_ids, rows, budget=1 << 20).memory is not None  # fits
    streamed = FeatureRows(store, shard_ids, rows, budget=0)
    assert streamed.memory is None and torch.equal(streamed[[4, 0]], half[[4, 0]])
    with pytest.raises(ValueError, match="features.dtype=float64"):
        FeatureStore(tmp_path, "enc", dtype="float64")


def test_only_missing_views_are_computed(tmp_path):
    store = FeatureStore(tmp_path, "enc")
    backbone, images = _backbone(), _images(3)
    views = {"original": lambda x: x, "flip_lr": lambda x: x.flip(-1)}
    first = _fill(store, backbone, images)
    both = _fill(store, backbone, images, views)
    assert (first.computed, both.computed) == (3, 3)  # only flip_lr was missing
    assert _fill(store, backbone, images, views).computed == 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "missing"])
def test_damaged_shard_is_discarded_and_recomputed(tmp_path, damage):
    store = FeatureStore(tmp_path, "enc")
    backbone, images = _backbone(), _images(4)
    _fill(store, backbone, images)
    reference = _read(store, images)
    (shard,) = (store.dir / "original").iterdir()
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[:-10]))
    elif damage == "flip":
        data[-3] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "empty":
        shard.write_bytes(b"")
    else:
        shard.unlink()
    fresh = FeatureStore(tmp_path, "enc")  # a new run checks every shard it uses
    assert (fresh.locate("original", [bytes_digest(d) for d in images])[0] == -1).all()
    assert not shard.exists() and _stored_rows(fresh) == 0  # never used again
    assert _fill(fresh, backbone, images).computed == 4
    assert torch.allclose(_read(fresh, images), reference, atol=1e-6)


def test_damaged_index_is_discarded_with_its_shards_and_rebuilt(tmp_path):
    store = FeatureStore(tmp_path, "enc")
    backbone, images = _backbone(), _images(4)
    _fill(store, backbone, images)
    reference = _read(store, images)
    store.index_path.write_bytes(b"this is not a database" * 100)
    Path(f"{store.index_path}-wal").unlink(missing_ok=True)
    fresh = FeatureStore(tmp_path, "enc")
    assert (fresh.locate("original", [bytes_digest(d) for d in images])[0] == -1).all()
    assert list((store.dir / "original").iterdir()) == []
    assert _fill(fresh, backbone, images).computed == 4
    assert torch.allclose(_read(fresh, images), reference, atol=1e-6)


def test_disk_full_during_a_shard_commit_keeps_the_old_state(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path, "enc", shard_rows=2)
    backbone, images = _backbone(), _images(6)
    _fill(store, backbone, images[:2])
    before = store.files()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FeatureStoreError, match="disk is full while committing") as caught:
        _fill(store, backbone, images)
    assert "paths.cache_dir" in str(caught.value) and str(store.dir) in str(caught.value)
    monkeypatch.undo()
    assert [p for p in store.files() if p.suffix == ".npy"] == [
        p for p in before if p.suffix == ".npy"
    ]  # no new or temporary shard
    assert not list(store.dir.rglob("*.tmp"))
    assert _stored_rows(store) == 2 and torch.isfinite(_read(store, images[:2])).all()
    assert _fill(store, backbone, images).computed == 4  # with room again, the rest is done


KILLER = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
from tests.data.test_features import _backbone, _fill, _images
from landmark_tl.data.features.store import FeatureStore

backbone = _backbone()
calls = 0
forward = backbone.forward
def dying(x):
    global calls
    calls += 1
    if calls == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no last words
    return forward(x)
backbone.forward = dying
_fill(FeatureStore(sys.argv[1], "enc", shard_rows=2), backbone, _images(9), batch_size=2)
"""


@pytest.mark.slow
def test_killed_pass_resumes_where_it_stopped_with_the_same_features(tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    store = FeatureStore(tmp_path / "store", "enc", shard_rows=2)
    assert _stored_rows(store) == 4  # two batches were committed before the kill
    images = _images(9)
    assert _fill(store, _backbone(), images, batch_size=2).computed == 5  # only the rest
    reference = FeatureStore(tmp_path / "reference", "enc")
    _fill(reference, _backbone(), images)
    assert torch.allclose(_read(store, images), _read(reference, images), atol=1e-5)


def _fill_in_process(root: str) -> int:
    return _fill(FeatureStore(root, "enc", shard_rows=3), _backbone(), _images(12)).computed


@pytest.mark.slow
def test_two_processes_filling_at_once_compute_each_row_once(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        computed = pool.map(_fill_in_process, [str(tmp_path)] * 2)
    assert sorted(computed) == [0, 12]  # one computed, the other found the rows
    store = FeatureStore(tmp_path, "enc")
    assert _stored_rows(store) == 12
    assert torch.isfinite(_read(store, _images(12))).all()  # every shard intact


def _fill_as_rank(rank: int, root: str, rendezvous: str, out: str) -> None:
    """One of 2 data-parallel ranks (gloo): fill the store twice, noting what it read."""
    torch.distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    images = _images(12)
    images[5] = b"not an image"
    store = FeatureStore(root, "enc", shard_rows=2)
    digests = [bytes_digest(d) for d in images]
    reads: list[list[int]] = []

    def fill():
        reads.append([])
        read = lambda i: reads[-1].append(i) or images[i]  # noqa: E731
        wanted = {"original": range(12)}
        return fill_store(store, _backbone(), digests, wanted, IDENTITY, read, _decode)

    first, again = fill(), fill()  # again: only the broken image is still missing
    shard_ids, _ = store.locate("original", digests)
    torch.distributed.destroy_process_group()
    summary = {
        "reads": reads,
        "failed": sorted(first.failed),
        "computed": [first.computed, again.computed],
        "stored": np.flatnonzero(shard_ids >= 0).tolist(),
    }
    Path(out, f"{rank}.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_data_parallel_ranks_split_the_feature_pass(tmp_path):
    """Each rank encodes a disjoint part of the missing images, together all of them once;
    then every rank sees every row, and both leave out the same broken image."""
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(
        _fill_as_rank, args=(str(tmp_path / "store"), rendezvous, str(tmp_path)), nprocs=2
    )
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    first = [r["reads"][0] for r in ranks]
    assert all(len(set(f)) == len(f) > 0 for f in first)  # nothing read twice
    assert set(first[0]).isdisjoint(first[1]) and set(first[0]) | set(first[1]) == set(range(12))
    assert sorted(ranks[0]["reads"][1] + ranks[1]["reads"][1]) == [5]  # the rest was there
    for r in ranks:
        assert r["failed"] == [5] and r["computed"] == [11, 0]
        assert r["stored"] == [i for i in range(12) if i != 5]


def test_an_image_replaced_during_the_pass_is_keyed_by_the_bytes_encoded(tmp_path, monkeypatch):
    from landmark_tl.data import datamodule as dm_module
    from landmark_tl.data.datamodule import LandmarkDataModule
    from landmark_tl.data.splits import SplitSpec
    from tests.training.test_faults import _tree

    root = _tree(tmp_path, images=4)
    victim, other = root / "Gothic" / "A" / "1.png", root / "Pyramids" / "B" / "2.png"
    original, replacement = victim.read_bytes(), other.read_bytes()
    real_fill = dm_module.fill_store

    def swap_then_fill(*args, **kwargs):  # the file changes after the catalog read it
        victim.write_bytes(replacement)
        return real_fill(*args, **kwargs)

    monkeypatch.setattr(dm_module, "fill_store", swap_then_fill)
    backbone = _backbone()
    store = FeatureStore(tmp_path / "store", "enc")
    dm = LandmarkDataModule(
        root,
        backbone.preprocessing,
        split=SplitSpec(1, 1),
        num_workers=2,
        feature_encoder=backbone,
        feature_store=store,
    )
    dm.setup()
    assert store.locate("original", [bytes_digest(original)])[0][0] == -1  # never stored
    assert victim not in {r.path for r in dm.catalog.records}  # left out, reported
    reasons = {p.path: p.reason for p in dm.catalog.problems}
    assert "changed since the catalog read it" in reasons[victim]
    assert len(dm.catalog.records) == 15 and len(dm.assignment) == 15  # the run goes on
    shard_ids, rows = store.locate("original", [bytes_digest(replacement)])
    stored = FeatureRows(store, shard_ids, rows, budget=0)[[0]]
    with torch.no_grad():
        image = dm_module.ImageDecoder(dm.catalog, backbone.preprocessing).decode(replacement, 0)
        assert torch.allclose(stored[0], backbone.eval()(image[None])[0], atol=1e-5)


@pytest.mark.slow
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

    from landmark_tl.commands.hydra_callbacks import WarmFeatureCache
    from landmark_tl.config.schema import register_configs
    from tests.conftest import CONF_DIR, TINY_OVERRIDES

    register_configs()
    overrides = [*TINY_OVERRIDES, f"data.root={tiny_tree}", f"paths.cache_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    WarmFeatureCache().on_multirun_start(cfg)
    (index,) = (tmp_path / "features").rglob("index.sqlite")
    files = sorted(p for p in (tmp_path / "features").rglob("*") if p.suffix == ".npy")
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 24  # every image
    assert len(files) == 1  # one shard of rows, not one file per image
    WarmFeatureCache().on_multirun_start(cfg)  # a second multirun only reads
    assert sorted(p for p in (tmp_path / "features").rglob("*") if p.suffix == ".npy") == files
