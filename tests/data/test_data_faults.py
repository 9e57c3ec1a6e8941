"""Bad inputs and faults of the data layer (issue 29): shard sets written atomically and
checked on read, reads that could block forever, the index on a full disk, one symlink
policy, large images, what the catalog index trusts, and clear messages for each."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_tl.commands.doctor import main as doctor
from landmark_tl.commands.shards import main as write_main
from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.core.io import bytes_digest
from landmark_tl.data import index as index_module
from landmark_tl.data.catalog import build_catalog, scan_image_folder
from landmark_tl.data.decode import load_rgb
from landmark_tl.data.features.extraction import FeaturePassError, fill_store
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.index import CatalogIndex, CatalogIndexError
from landmark_tl.data.records import CatalogError
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.sources.gldv2 import GLDv2Source, image_key
from landmark_tl.data.sources.manifest import ManifestSource
from landmark_tl.data.sources.shards import ShardSource
from landmark_tl.models.backbone import create_backbone
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.datasets import jpeg, make_gldv2, write_csv

OLD = 1_600_000_000_000_000_000  # an mtime long past: the index trusts such rows at once


def _tree(root: Path, images: int = 3, fmt: str = "png") -> Path:
    """A 2 x 2 tree of small images, different bytes everywhere."""
    for c, category in enumerate(("Gothic", "Pyramids")):
        for lm, landmark in enumerate(("A", "B")):
            folder = root / category / landmark
            folder.mkdir(parents=True)
            for i in range(images):
                color = (60 * c, 60 * lm, 20 * i)
                Image.new("RGB", (16, 16), color).save(folder / f"{i}.{fmt}")
    return root


def _keys(catalog) -> list[str]:
    return sorted(catalog.key(r.path) for r in catalog.records)


# --- shard sets: atomic, never mixed ------------------------------------------------------


def test_resharding_in_place_is_refused_and_the_set_stays_whole(tiny_tree, tmp_path, capsys):
    out = tmp_path / "set"
    assert write_main([f"out={out}", "per_shard=10", f"data.root={tiny_tree}"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = [f"out={out}", "per_shard=5", "data=shards", f"data.root={out}", "replace=true"]
    assert write_main(again) == 1
    assert "overlaps the folder the data is read from" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(build_catalog(ShardSource(out)).records) == 24


def test_a_non_empty_out_is_refused_unless_replace_and_then_replaced_whole(
    tiny_tree, tmp_path, capsys
):
    out = tmp_path / "set"
    assert write_main([f"out={out}", "per_shard=5", f"data.root={tiny_tree}"]) == 0  # 5 shards
    small = _tree(tmp_path / "small")
    assert write_main([f"out={out}", f"data.root={small}"]) == 1
    err = capsys.readouterr().err
    assert "not empty (6 entries" in err and "add replace=true to replace the shard set" in err
    assert len(build_catalog(ShardSource(out)).records) == 24  # untouched
    assert write_main([f"out={out}", f"data.root={small}", "replace=true"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shards.json"]
    assert _keys(build_catalog(ShardSource(out))) == _keys(scan_image_folder(small))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folders left


def test_replace_does_not_delete_a_folder_that_is_not_a_shard_set(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert write_main([f"out={out}", f"data.root={_tree(tmp_path / 't')}", "replace=true"]) == 1
    assert "holds files that are not a shard set (e.g. notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_stray_or_changed_shard_is_refused_not_mixed(tiny_tree, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert write_main([f"out={first}", "per_shard=30", f"data.root={tiny_tree}"]) == 0
    assert write_main([f"out={second}", f"data.root={_tree(tmp_path / 't')}"]) == 0
    shutil.copy(second / "shard-000000.tar", first / "shard-000001.tar")  # a stray shard
    with pytest.raises(CatalogError, match="1 shards are not in the set's shards.json"):
        build_catalog(ShardSource(first))
    (first / "shard-000001.tar").unlink()
    shard = first / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF  # same size, other bytes: seen with data.verify=digest
    shard.write_bytes(bytes(data))
    assert len(build_catalog(ShardSource(first)).records) >= 23
    with pytest.raises(CatalogError, match="differ from the digest in shards.json"):
        build_catalog(ShardSource(first, check_digests=True))
    shard.write_bytes(bytes(data[:-1024]))
    with pytest.raises(CatalogError, match="bytes, shards.json says"):
        build_catalog(ShardSource(first))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["per_shard=0"], 2, "per_shard=0: must be a whole number of images per shard, at least 1"),
        (["per_shard=-3"], 2, "per_shard=-3: must be"),
        (["replace=maybe"], 2, "replace=maybe: must be true or false"),
        ([], 1, "is a file, not a folder; give a new folder"),
    ],
)
def test_bad_shards_arguments_are_refused_naming_the_key(tmp_path, capsys, args, code, message):
    out = tmp_path / "file.txt"
    out.write_text("a file")
    tree = _tree(tmp_path / "t")
    assert write_main([f"out={out}", f"data.root={tree}", *args]) == code
    assert message in capsys.readouterr().err
    assert out.read_text() == "a file"


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _labels(path: str, landmark: str) -> bytes:
    return json.dumps({"category": "Gothic", "landmark": landmark, "path": path}).encode()


def test_a_member_key_used_twice_in_a_shard_is_reported_and_left_out(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    images = [jpeg(tmp_path / f"{i}.jpg", seed=i).read_bytes() for i in range(3)]
    _tar(
        root / "a.tar",
        [
            ("0.jpg", images[0]),
            ("0.json", _labels("Gothic/Dom/0.jpg", "Dom")),
            ("1.jpg", images[1]),
            ("1.json", _labels("Gothic/Dom/1.jpg", "Dom")),
            ("0.jpg", images[2]),  # the same key again, with other labels
            ("0.json", _labels("Gothic/Nave/9.jpg", "Nave")),
        ],
    )
    catalog = build_catalog(ShardSource(root))
    assert _keys(catalog) == ["Gothic/Dom/1.jpg"]
    reasons = [p.reason for p in catalog.problems]
    assert any("member key 0 is used by more than one sample" in r for r in reasons), reasons


# --- reads that could block forever -------------------------------------------------------


def _finishes(call, seconds: float = 20.0):
    """``call()``'s result or exception, asserting it returns (a daemon thread: a read
    that blocks forever fails the test instead of hanging the suite)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return outcome


def test_a_fifo_manifest_is_refused_without_opening_it(tmp_path):
    root = _tree(tmp_path / "t")
    os.mkfifo(root / "manifest.csv")
    outcome = _finishes(lambda: build_catalog(ManifestSource(root, "manifest.csv")))
    error = outcome.get("error")
    assert isinstance(error, CatalogError)
    assert "cannot be read as a CSV file (not a regular file (FIFO)" in str(error)


def test_a_manifest_naming_a_folder_or_holding_a_nul_byte_is_refused(tmp_path):
    root = _tree(tmp_path / "t")
    with pytest.raises(CatalogError, match="is a folder, not a CSV file; name the CSV file"):
        build_catalog(ManifestSource(root, "Gothic"))
    rows = [["Gothic/A/0.png", "A", "Gothic"], ["Gothic/A/\0.png", "A", "Gothic"]]
    write_csv(root / "m.csv", ["path", "landmark", "category"], rows)
    with pytest.raises(CatalogError, match=r"m.csv, line 3: path .* holds a NUL byte"):
        build_catalog(ManifestSource(root, "m.csv"))


def test_manifest_rows_naming_a_fifo_or_a_folder_say_what_they_are(tmp_path):
    root = _tree(tmp_path / "t")
    os.mkfifo(root / "Gothic" / "A" / "pipe.png")
    (root / "Gothic" / "A" / "dir.png").mkdir()
    keys = [p.relative_to(root).as_posix() for p in sorted(root.rglob("?.png"))]
    keys += ["Gothic/A/pipe.png", "Gothic/A/dir.png", "Gothic/A/gone.png"]
    rows = [[key, key.rsplit("/", 1)[0], key.split("/")[0]] for key in keys]
    manifest = write_csv(tmp_path / "m.csv", ["path", "landmark", "category"], rows)
    catalog = _finishes(lambda: build_catalog(ManifestSource(root, manifest)))["value"]
    reasons = {p.path.name: p.reason for p in catalog.problems}
    assert reasons["pipe.png"].startswith("a FIFO, not a regular file (never opened)")
    assert reasons["dir.png"].startswith("a folder, not a file")
    assert reasons["gone.png"].startswith("file not found")
    assert len(catalog.records) == 12


def test_gldv2_csv_files_that_are_fifos_are_refused_not_skipped(tmp_path):
    root = tmp_path / "gldv2"
    make_gldv2(root)
    (root / "train_clean.csv").unlink()
    os.mkfifo(root / "train_clean.csv")  # was taken as absent: every image, unclean ones too
    outcome = _finishes(lambda: build_catalog(GLDv2Source(root)))
    assert isinstance(outcome.get("error"), CatalogError)
    assert "train_clean.csv: cannot be read as a CSV file (not a regular file (FIFO)" in str(
        outcome["error"]
    )


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(data: bytes, i: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).permute(
        2, 0, 1
    )


def _pass(tmp_path: Path, read, **options):
    images = [_png(i) for i in range(4)]
    backbone = create_backbone("test_convnext", weights="none", input_size=(3, 16, 16))
    store = FeatureStore(tmp_path / "store", "enc")
    return fill_store(
        store,
        backbone,
        [bytes_digest(d) for d in images],
        {"original": range(4)},
        {"original": lambda x: x},
        lambda i: read(images, i),
        _decode,
        num_workers=1,
        batch_size=2,
        **options,
    )


def _dies_in_worker(images: list[bytes], i: int) -> bytes:
    if torch.utils.data.get_worker_info() is not None:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    return images[i]


def test_a_feature_pass_worker_that_dies_stops_the_pass_with_the_reason(tmp_path):
    with pytest.raises(FeaturePassError) as caught:
        _pass(tmp_path, _dies_in_worker)
    message = str(caught.value)
    assert "the feature pass stopped: DataLoader worker (pid(s) " in message
    assert "exited unexpectedly" in message or "killed by signal" in message
    assert "Lower data.num_workers" in message and "/dev/shm" in message


def test_a_feature_pass_worker_that_hangs_times_out(tmp_path):
    blocked, _ = os.pipe()  # never written: a read that blocks, as on a hung mount

    def hangs(images: list[bytes], i: int) -> bytes:
        os.read(blocked, 1)
        return images[i]

    outcome = _finishes(lambda: _pass(tmp_path, hangs, timeout=1))
    assert isinstance(outcome.get("error"), FeaturePassError)
    assert "timed out after 1 seconds" in str(outcome["error"])
    assert "data.timeout_s=1 s" in str(outcome["error"])


def test_training_loaders_with_workers_have_the_timeout(tiny_config):
    from landmark_tl.training.build import build_backbone, build_datamodule

    config = tiny_config("data.num_workers=1", "data.timeout_s=42", "features.cache=false")
    dm = build_datamodule(config, build_backbone(config))
    dm.setup()
    assert dm.train_dataloader().timeout == 42 and dm.val_dataloader().timeout == 42


# --- the catalog index on a full disk ---------------------------------------------------


def _indexed(tmp_path: Path) -> tuple[Path, CatalogIndex]:
    root = _tree(tmp_path / "t")
    index = CatalogIndex(tmp_path / "index.sqlite")
    build_catalog(FolderSource(root), index=index)
    return root, index


def _rows(index: CatalogIndex) -> int:
    with sqlite3.connect(index.path) as db:
        return db.execute("SELECT COUNT(*) FROM files").fetchone()[0]


def test_a_full_disk_on_opening_the_index_keeps_it_and_says_so(tmp_path, monkeypatch):
    root, index = _indexed(tmp_path)
    (root / "Gothic" / "A" / "new.png").write_bytes(_png(99))

    def full(*args, **kwargs):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode, error.sqlite_errorname = 13, "SQLITE_FULL"
        raise error

    monkeypatch.setattr(index_module, "connect", full)
    again = CatalogIndex(index.path)
    with pytest.raises(CatalogIndexError) as caught:
        build_catalog(FolderSource(root), index=again)
    message = str(caught.value)
    assert "catalog index cannot be written (database or disk is full)" in message
    assert "free disk space" in message and "[Errno" not in message
    monkeypatch.undo()
    assert _rows(index) == 12  # the healthy index was kept


def test_a_full_disk_while_the_index_commits_keeps_its_rows(tmp_path, monkeypatch):
    root, index = _indexed(tmp_path)
    for i in range(300):  # enough rows to need new pages
        (root / "Gothic" / "A" / f"n{i}.png").write_bytes(_png(100 + i))
    real = index_module.connect

    def capped(path, **kwargs):  # the file may not grow: SQLite's own "disk is full"
        db = real(path, **kwargs)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(index_module, "connect", capped)
    with pytest.raises(CatalogIndexError, match="database or disk is full"):
        build_catalog(FolderSource(root), index=CatalogIndex(index.path))
    monkeypatch.undo()
    assert _rows(index) == 12


def test_an_index_that_cannot_be_created_has_no_errno_in_its_message(tmp_path):
    (tmp_path / "file").write_text("x")
    index = CatalogIndex(tmp_path / "file" / "index.sqlite")
    with pytest.raises(CatalogIndexError) as caught:
        build_catalog(FolderSource(_tree(tmp_path / "t")), index=index)
    assert "[Errno" not in str(caught.value) and "catalog index cannot be opened" in str(
        caught.value
    )


# --- one symlink policy -------------------------------------------------------------------


def test_folder_follows_links_inside_the_root_and_refuses_links_out(tmp_path):
    root = _tree(tmp_path / "t")
    (root / ".store").mkdir()  # hidden: not listed itself
    Image.new("RGB", (16, 16), (9, 9, 9)).save(root / ".store" / "x.png")
    os.symlink(root / ".store" / "x.png", root / "Gothic" / "B" / "inner.png")
    assert "Gothic/B/inner.png" in _keys(scan_image_folder(root))  # followed: inside the root
    jpeg(tmp_path / "outside" / "x.jpg", seed=5)
    os.symlink(tmp_path / "outside" / "x.jpg", root / "Gothic" / "B" / "out.jpg")
    with pytest.raises(CatalogError, match="out.jpg leads outside data.root .* symbolic link"):
        scan_image_folder(root)
    (root / "Gothic" / "B" / "out.jpg").unlink()
    os.symlink(tmp_path / "outside", root / "Gothic" / "C")  # a landmark folder outside
    with pytest.raises(CatalogError, match="Gothic/C leads outside data.root"):
        scan_image_folder(root)


def test_gldv2_refuses_an_image_linked_from_outside_the_root(tmp_path):
    root = tmp_path / "gldv2"
    ids = make_gldv2(root)
    key = image_key(ids["103"][0])
    outside = jpeg(tmp_path / "outside.jpg", seed=77)
    (root / key).unlink()
    os.symlink(outside, root / key)
    with pytest.raises(CatalogError, match="leads outside data.root .* symbolic link"):
        build_catalog(GLDv2Source(root))


def test_a_shard_linked_from_outside_the_root_is_refused(tiny_tree, tmp_path):
    out = tmp_path / "set"
    assert write_main([f"out={out}", f"data.root={tiny_tree}"]) == 0
    (tmp_path / "link").mkdir()
    os.symlink(out / "shard-000000.tar", tmp_path / "link" / "shard-000000.tar")
    with pytest.raises(CatalogError, match="leads outside data.root"):
        build_catalog(ShardSource(tmp_path / "link"))


# --- large images -------------------------------------------------------------------------


def test_images_over_the_pixel_limit_are_skipped_and_doctor_reports_them(tmp_path, capsys):
    root = _tree(tmp_path / "t")
    Image.new("RGB", (200, 150)).save(root / "Gothic" / "A" / "huge.png")  # 30 000 px
    jpeg(root / "Gothic" / "A" / "photo.jpg", seed=3, size=400)  # 160 000 px, /64 as a draft
    source = FolderSource(root)
    source.max_pixels = 10_000
    catalog = build_catalog(source)
    assert [p.path.name for p in catalog.problems] == ["huge.png"]
    assert "200x150 = 30,000 pixels to decode, above data.max_pixels=10000" in (
        catalog.problems[0].reason
    )
    assert "Gothic/A/photo.jpg" in _keys(catalog)
    assert (
        doctor(
            [f"data.root={root}", "data.max_pixels=10000", "data.split.val=1", "data.split.test=1"]
        )
        == 0
    )
    assert "huge.png" in capsys.readouterr().out


def test_a_jpeg_is_decoded_reduced_to_the_size_asked(tmp_path):
    photo = jpeg(tmp_path / "photo.jpg", seed=1, size=800)
    assert load_rgb(photo, draft=(90, 90)).size == (100, 100)  # 1/8: still >= 90
    assert load_rgb(photo).size == (800, 800)
    with pytest.raises(ValueError, match="above data.max_pixels=1000"):
        load_rgb(photo, draft=(90, 90), max_pixels=1000)


# --- what the catalog index trusts ----------------------------------------------------------


def test_verify_digest_sees_bytes_replaced_with_size_and_mtime_kept(tmp_path):
    root = _tree(tmp_path / "t", fmt="bmp")  # uncompressed: other pixels, same size
    image = root / "Gothic" / "A" / "0.bmp"
    for file in root.rglob("*.bmp"):
        os.utime(file, ns=(OLD, OLD))
    first = build_catalog(FolderSource(root), index=CatalogIndex(tmp_path / "i.sqlite"))
    before = first.digests[image]
    Image.new("RGB", (16, 16), (1, 2, 3)).save(image)
    os.utime(image, ns=(OLD, OLD))
    trusting = build_catalog(FolderSource(root), index=CatalogIndex(tmp_path / "i.sqlite"))
    assert trusting.digests[image] == before  # data.verify=stamp: size and mtime trusted
    checking = CatalogIndex(tmp_path / "i.sqlite", rehash=True)
    now = build_catalog(FolderSource(root), index=checking).digests[image]
    assert now == bytes_digest(image.read_bytes()) != before


def test_verify_digest_is_a_config_key_that_reaches_the_index_and_shards(tiny_tree, tmp_path):
    from landmark_tl.training.build import build_source, catalog_index

    config = compose_config(
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.cache_dir={tmp_path}",
        "data.verify=digest",
    )
    assert catalog_index(config, build_source(config)).rehash
    shards = compose_config("data=shards", f"data.root={tmp_path}", "data.verify=digest")
    assert build_source(shards).check_digests


# --- config values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("features.dtype=int8", "features.dtype=int8: must be one of ['float32', 'float16']"),
        ("features.memory_mb=-1", "features.memory_mb=-1: must be >= 0"),
        ("data.max_pixels=0", "data.max_pixels=0: must be >= 1"),
        ("data.timeout_s=-1", "data.timeout_s=-1.0: must be >= 0"),
    ],
)
def test_bad_data_and_feature_values_are_refused_at_start(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config(compose_config(*TINY_OVERRIDES, override))
