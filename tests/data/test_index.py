"""The catalog index: a warm read stats files only; changes, deletions, damage, concurrency."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from landmark_tl.commands.doctor import main as doctor
from landmark_tl.data import catalog as catalog_module
from landmark_tl.data.catalog import build_catalog, scan_image_folder
from landmark_tl.data.doctor import inspect_catalog
from landmark_tl.data.index import CatalogIndex, Verify
from landmark_tl.data.shard_writer import write_shards
from landmark_tl.data.sources import ImageSource
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.sources.manifest import ManifestSource
from landmark_tl.data.sources.shards import ShardSource
from landmark_tl.data.splits import SplitSpec
from tests.datasets import folder_manifest
from tests.training.test_faults import _tree

DAY_NS = 86_400 * 10**9


def _age(root: Path) -> None:
    """Make every file a day old, as photos on a disk are (fresh files are read again)."""
    past = time.time_ns() - DAY_NS
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(past, past))


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Keys of the images every source reads (bytes), in order."""
    seen: list[str] = []
    for cls in (ImageSource, ShardSource):
        real = cls.read

        def counted(self, key, real=real):
            seen.append(key)
            return real(self, key)

        monkeypatch.setattr(cls, "read", counted)
    return seen


def _tree_aged(tmp_path: Path) -> Path:
    root = _tree(tmp_path)
    (root / "Gothic" / "A" / "bad.png").write_bytes(b"not a png")
    _age(root)
    return root


def _same(a, b) -> None:
    assert a.records == b.records and a.problems == b.problems
    assert a.content_digests() == b.content_digests()


def test_a_warm_read_opens_no_file_and_gives_the_same_catalog(tmp_path, reads):
    root = _tree_aged(tmp_path)
    index = CatalogIndex(tmp_path / "index.sqlite")
    cold = build_catalog(FolderSource(root), index=index)
    assert len(reads) == 13
    reads.clear()
    warm = build_catalog(FolderSource(root), index=CatalogIndex(tmp_path / "index.sqlite"))
    assert reads == []  # only stat-ed: digests and verdicts come from the index
    _same(warm, cold)
    _same(warm, scan_image_folder(root))
    assert "unreadable" in warm.problems[0].reason  # the bad file stays reported


def test_changed_files_are_read_again(tmp_path, reads):
    root = _tree_aged(tmp_path)
    index = CatalogIndex(tmp_path / "index.sqlite")
    build_catalog(FolderSource(root), index=index)
    grown, same_size = root / "Gothic" / "A" / "0.png", root / "Gothic" / "B" / "1.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(grown)  # another size
    data = bytearray(same_size.read_bytes())
    data[-20] ^= 0xFF  # same size, other content: a damaged copy
    same_size.write_bytes(bytes(data))
    reads.clear()
    catalog = build_catalog(FolderSource(root), index=index)
    assert sorted(reads) == ["Gothic/A/0.png", "Gothic/B/1.png"]
    assert [p.path for p in catalog.problems] == [root / "Gothic" / "A" / "bad.png", same_size]
    assert catalog.digests[grown] == scan_image_folder(root).digests[grown]


def test_a_row_serves_runs_that_ask_no_more_checking_than_it_had(tmp_path, reads):
    root = _tree_aged(tmp_path)
    path = tmp_path / "index.sqlite"
    headers = build_catalog(FolderSource(root), index=CatalogIndex(path), verify=Verify.header)
    assert len(reads) == 13 and "unreadable" in headers.problems[0].reason
    assert headers.digests == scan_image_folder(root).digests
    reads.clear()
    build_catalog(FolderSource(root), index=CatalogIndex(path), verify=Verify.none)
    assert reads == []  # less checking than the row had
    decoded = build_catalog(FolderSource(root), index=CatalogIndex(path), verify=True)
    assert len(reads) == 12  # decoded now; the unreadable one stays a problem, unread
    _same(decoded, headers)
    reads.clear()
    build_catalog(FolderSource(root), index=CatalogIndex(path), verify=True)
    assert reads == []


def test_a_row_read_in_the_files_last_clock_tick_is_not_trusted(tmp_path, reads):
    root = _tree(tmp_path)  # fresh files: a change in the same tick keeps size and mtime
    index = CatalogIndex(tmp_path / "index.sqlite")
    build_catalog(FolderSource(root), index=index)
    path = root / "Pyramids" / "A" / "2.png"
    stamp = path.stat()
    other = (root / "Pyramids" / "B" / "2.png").read_bytes()
    if len(other) == stamp.st_size:
        path.write_bytes(other)
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same size and mtime
    reads.clear()
    catalog = build_catalog(FolderSource(root), index=index)
    assert len(reads) == 12  # every file modified within 2 s of its reading is read again
    _same(catalog, scan_image_folder(root))


def test_files_deleted_after_indexing_are_reported_and_the_run_goes_on(
    tmp_path, reads, monkeypatch
):
    root = _tree_aged(tmp_path)
    index = CatalogIndex(tmp_path / "index.sqlite")
    build_catalog(FolderSource(root), index=index)
    (root / "Gothic" / "A" / "2.png").unlink()
    gone = root / "Pyramids" / "B" / "0.png"
    real_stamp = FolderSource.stamp

    def vanishing(self, key):  # deleted between the listing and the stat
        if key == "Pyramids/B/0.png":
            raise FileNotFoundError(2, "No such file or directory", str(gone))
        return real_stamp(self, key)

    monkeypatch.setattr(FolderSource, "stamp", vanishing)
    reads.clear()
    catalog = build_catalog(FolderSource(root), index=index)
    assert reads == [] and len(catalog.records) == 10
    assert "1 files indexed by an earlier run are no longer listed" in catalog.notes[0]
    reasons = {p.path: p.reason for p in catalog.problems}
    assert reasons[gone].startswith("deleted or unreadable after it was listed")


def test_a_damaged_index_is_discarded_and_rebuilt(tmp_path, reads, caplog):
    root = _tree_aged(tmp_path)
    path = tmp_path / "index.sqlite"
    first = build_catalog(FolderSource(root), index=CatalogIndex(path))
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)  # a damaged header and pages
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    reads.clear()
    with caplog.at_level(logging.WARNING):
        again = build_catalog(FolderSource(root), index=CatalogIndex(path))
    assert "damaged catalog index" in caplog.text
    assert len(reads) == 13  # nothing trusted from the damaged file
    _same(again, first)
    reads.clear()
    build_catalog(FolderSource(root), index=CatalogIndex(path))
    assert reads == []  # rebuilt


def _read_through(args: tuple[str, str]) -> int:
    root, index = args
    read = []
    real = ImageSource.read

    def counted(self, key):
        read.append(key)
        return real(self, key)

    ImageSource.read = counted
    build_catalog(FolderSource(root), index=CatalogIndex(index))
    return len(read)


@pytest.mark.slow
def test_two_processes_filling_one_index_read_each_file_once(tmp_path):
    root = _tree_aged(tmp_path)
    with mp.get_context("spawn").Pool(2) as pool:
        counts = pool.map(_read_through, [(str(root), str(tmp_path / "i.sqlite"))] * 2)
    assert sorted(counts) == [0, 13]
    _same(
        build_catalog(FolderSource(root), index=CatalogIndex(tmp_path / "i.sqlite")),
        scan_image_folder(root),
    )


def test_manifest_and_shard_sources_read_through_the_index(tiny_tree, tmp_path, reads):
    root = tmp_path / "tree"
    shutil.copytree(tiny_tree, root)
    _age(root)
    manifest = folder_manifest(root, root / "m.csv")
    shards = tmp_path / "shards"
    write_shards(scan_image_folder(root), shards, per_shard=10)
    _age(shards)
    for source in (ManifestSource(root, manifest), ShardSource(shards)):
        index = CatalogIndex(tmp_path / f"{source.name}.sqlite")
        cold = build_catalog(source, index=index)
        reads.clear()
        warm = build_catalog(type(source)(*_args(source)), index=index)
        assert reads == [] and len(warm.records) == 24
        _same(warm, cold)


def _args(source) -> tuple:
    return (source.root, source.manifest) if isinstance(source, ManifestSource) else (source.root,)


def test_doctor_reads_sizes_and_modes_from_the_index(tmp_path, monkeypatch, capsys):
    root = _tree_aged(tmp_path)
    Image.new("CMYK", (40, 40)).save(root / "Gothic" / "A" / "cmyk.jpg")
    Image.new("RGB", (4, 4), (9, 8, 7)).save(root / "Gothic" / "B" / "dot.png")
    _age(root)
    cache = tmp_path / "cache"
    args = [
        f"data.root={root}",
        f"paths.cache_dir={cache}",
        "data.split.val=1",
        "data.split.test=1",
    ]
    assert doctor(args) == 0
    (index,) = (cache / "catalog").glob("folder-*.sqlite")
    catalog = build_catalog(FolderSource(root), index=CatalogIndex(index))

    def no_open(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(catalog_module.Image, "open", no_open)
    report = inspect_catalog(catalog, SplitSpec(1, 1))
    assert ("dot.png", (4, 4)) in [(p.name, size) for p, size in report.tiny]
    assert [(p.name, mode) for p, mode in report.odd_modes] == [("cmyk.jpg", "CMYK")]
    assert doctor(args) == 0  # warm: the same report without opening an image
    assert "cmyk.jpg: CMYK" in capsys.readouterr().out


def test_an_image_that_only_the_feature_pass_finds_broken_is_skipped_and_not_read_again(
    tmp_path, reads, monkeypatch
):
    """The cold catalog reads headers only; the pass's decode is the one that finds a
    truncated file: reported, left out, the run goes on, and the index keeps the verdict."""
    import io

    import numpy as np

    from landmark_tl.data import datamodule as dm_module
    from landmark_tl.data.datamodule import LandmarkDataModule
    from landmark_tl.data.features.store import FeatureStore
    from landmark_tl.models.backbone import create_backbone

    root = _tree(tmp_path, images=4)
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    broken = root / "Gothic" / "A" / "broken.png"
    broken.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # header intact
    _age(root)
    backbone = create_backbone("test_convnext", weights="none", input_size=(3, 32, 32))

    def setup():
        dm = LandmarkDataModule(
            root,
            backbone.preprocessing,
            index=CatalogIndex(tmp_path / "index.sqlite"),
            split=SplitSpec(1, 1),
            num_workers=0,
            feature_encoder=backbone,
            feature_store=FeatureStore(tmp_path / "store", "enc"),
        )
        dm.setup()
        return dm

    decoded: list[str] = []

    def counted(data, real=dm_module.load_rgb, **options):
        decoded.append(Path(data.name).name)
        return real(data, **options)

    monkeypatch.setattr(dm_module, "load_rgb", counted)
    cold = setup()
    assert len(reads) == 17 and len(decoded) == 17  # each image hashed once, decoded once
    assert broken not in {r.path for r in cold.catalog.records}
    assert len(cold.catalog.records) == len(cold.assignment) == 16  # the run goes on
    (reason,) = [p.reason for p in cold.catalog.problems if p.path == broken]
    assert "truncated" in reason and "found by the feature pass" in reason
    reads.clear(), decoded.clear()
    build_catalog(FolderSource(root), index=CatalogIndex(tmp_path / "index.sqlite"), verify=True)
    assert reads == []  # the pass's decode verified the others: fine-tuning reads nothing
    warm = setup()
    assert reads == [] and decoded == []  # nothing read: the index knows the broken one
    assert warm.catalog.records == cold.catalog.records
    (reason,) = [p.reason for p in warm.catalog.problems if p.path == broken]
    assert reason.startswith("unreadable: OSError") and "truncated" in reason
