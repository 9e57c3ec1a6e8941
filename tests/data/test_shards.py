"""Tar shards: written from any source, read back as the same catalog; damage is reported."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from landmark_tl.commands.doctor import main as doctor
from landmark_tl.commands.shards import main as write_main
from landmark_tl.data.catalog import build_catalog, scan_image_folder
from landmark_tl.data.records import CatalogError
from landmark_tl.data.sources.shards import ShardSource
from landmark_tl.training.run import train
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.datasets import jpeg


def _labels(catalog):
    return [(catalog.key(r.path), r.category, r.landmark) for r in catalog.records]


@pytest.fixture(scope="module")
def shard_dir(tiny_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    assert write_main([f"out={out}", "per_shard=10", f"data.root={tiny_tree}"]) == 0
    return out


def test_shards_hold_the_source_images_and_labels(tiny_tree, shard_dir):
    assert sorted(p.name for p in shard_dir.iterdir()) == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
        "shards.json",
    ]
    with tarfile.open(shard_dir / "shard-000000.tar") as tar:
        names = tar.getnames()
        labels = json.loads(tar.extractfile(names[1]).read())
    assert names[:2] == ["000000000.png", "000000000.json"]  # WebDataset: key.ext pairs
    assert set(labels) == {"category", "landmark", "path"}
    folder = scan_image_folder(tiny_tree)
    shards = build_catalog(ShardSource(shard_dir))
    assert _labels(shards) == _labels(folder) and shards.hierarchy == folder.hierarchy
    assert shards.content_digests() == folder.content_digests()  # bytes as they were
    assert not shards.problems


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _sample(path: str, landmark: str = "Dom") -> bytes:
    return json.dumps({"category": "Gothic", "landmark": landmark, "path": path}).encode()


def test_corrupt_members_and_a_truncated_tar_are_reported_and_the_rest_is_used(tmp_path):
    image = jpeg(tmp_path / "x.jpg", seed=1).read_bytes()
    other = jpeg(tmp_path / "y.jpg", seed=2).read_bytes()
    root = tmp_path / "shards"
    root.mkdir()
    _tar(
        root / "a.tar",
        {
            "0.jpg": image,
            "0.json": _sample("Gothic/Dom/0.jpg"),
            "1.jpg": other,
            "1.json": b"{not json",
            "2.jpg": b"garbage bytes",
            "2.json": _sample("Gothic/Dom/2.jpg"),
            "3.json": _sample("/etc/3.jpg"),
        },
    )
    whole = _tar(
        tmp_path / "b.tar",
        {f"{i}.{ext}": data for i in range(4) for ext, data in
         (("jpg", jpeg(tmp_path / f"{i}.jpg", seed=10 + i).read_bytes()),
          ("json", _sample(f"Gothic/Nave/{i}.jpg", "Nave")))},
    )  # fmt: skip
    (root / "b.tar").write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    catalog = build_catalog(ShardSource(root))
    keys = [key for key, *_ in _labels(catalog)]
    assert keys[0] == "Gothic/Dom/0.jpg" and len(keys) >= 2  # b.tar's first samples survive
    assert all(key.startswith("Gothic/Nave/") for key in keys[1:])
    reasons = "\n".join(f"{p.path.name}: {p.reason}" for p in catalog.problems)
    assert "a.tar: corrupt labels member 1.json" in reasons
    assert "a.tar: image member 1 has no usable .json labels" in reasons
    assert "2.jpg: unreadable: UnidentifiedImageError" in reasons
    assert "must be relative, without '..'" in reasons
    assert "truncated" in reasons


def test_no_shards_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="no \\*.tar shards; write them with"):
        build_catalog(ShardSource(tmp_path))


@pytest.mark.slow
def test_training_on_shards_matches_the_folder_with_the_same_split(tiny_tree, shard_dir, tmp_path):
    base = [o for o in TINY_OVERRIDES if not o.startswith("data=")]
    base.append(f"paths.cache_dir={tmp_path / 'cache'}")
    folder = train(compose_config(*base, "data=folder", f"data.root={tiny_tree}"), tmp_path / "a")
    shards = train(
        compose_config(
            *base,
            "data=shards",
            f"data.root={shard_dir}",
            f"data.split_file={tmp_path / 'a' / 'split.csv'}",
            "features.cache=false",
        ),
        tmp_path / "b",
    )
    assert shards["data"]["source"] == "shards"
    assert shards["test"] == folder["test"] and shards["hierarchy"] == folder["hierarchy"]
    assert (tmp_path / "a/split.csv").read_text() == (tmp_path / "b/split.csv").read_text()


def test_doctor_reads_shards(shard_dir, capsys):
    assert doctor(["data=shards", f"data.root={shard_dir}", "data.split.val=1"]) == 0
    out = capsys.readouterr().out
    assert "2 categories, 4 landmarks, 24 usable images." in out


def test_data_parallel_ranks_read_disjoint_shards(shard_dir, monkeypatch):
    """Under data-parallel training each rank is dealt whole shards: no shard file is read
    by two ranks, every shard is read in an epoch, and every rank serves as many items."""
    from torch.utils.data import DataLoader

    from landmark_tl.data.datamodule import LandmarkDataModule
    from landmark_tl.data.sampling import ShardSampler
    from landmark_tl.data.splits import SplitSpec
    from landmark_tl.models.backbone import create_backbone

    source = ShardSource(shard_dir)
    read: list[str] = []
    real = ShardSource.read

    def counted(self, key):
        read.append(key)
        return real(self, key)

    pre = create_backbone("resnet18", weights="none", input_size=(3, 32, 32)).preprocessing
    dm = LandmarkDataModule(source, pre, split=SplitSpec(1, 1), num_workers=0, seed=3)
    dm.setup()
    # Lightning would be running 2 processes: the module sees a world of 2 and rank 0
    for name, value in {"is_initialized": True, "get_world_size": 2, "get_rank": 0}.items():
        monkeypatch.setattr(torch.distributed, name, lambda v=value: v)
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, ShardSampler)
    dataset = dm.datasets["train"]
    items = len(dataset)
    monkeypatch.setattr(ShardSource, "read", counted)
    for epoch in (0, 1):
        by_rank = []
        for rank in (0, 1):
            read.clear()
            ranked = ShardSampler(dataset, sampler.shards, num_replicas=2, rank=rank, seed=3)
            ranked.set_epoch(epoch)
            for _ in DataLoader(dataset, batch_size=4, sampler=ranked):
                pass
            assert len(read) == len(ranked) == -(-items // 2)
            by_rank.append({source.shard_of(k) for k in read})
        assert by_rank[0].isdisjoint(by_rank[1])
        assert by_rank[0] | by_rank[1] == {
            source.shard_of(dm.catalog.key(r.path)) for r in dm.records("train")
        }


def test_fewer_shards_than_ranks_is_refused():
    from torch.utils.data import TensorDataset

    from landmark_tl.data.sampling import ShardSampler

    with pytest.raises(ValueError, match="1 shard.*2 data-parallel ranks.*per_shard"):
        ShardSampler(TensorDataset(torch.zeros(4)), [0, 0, 0, 0], num_replicas=2, rank=0)
