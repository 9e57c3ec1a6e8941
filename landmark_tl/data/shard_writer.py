"""Write a catalog as WebDataset tar shards (``landmark-tl shards``); the shards
source (:mod:`landmark_tl.data.sources.shards`) reads them back."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from landmark_tl.core.io import atomic_write_json, file_digest
from landmark_tl.data.catalog import Catalog
from landmark_tl.data.sources.shards import (
    SET_FORMAT,
    SET_MANIFEST,
    SHARD_PATTERN,
    ShardSetError,
    _check_out,
    _move_into_place,
)


def write_shards(
    catalog: Catalog,
    out_dir: str | Path,
    per_shard: int = 1000,
    seed: int = 0,
    *,
    replace: bool = False,
) -> list[Path]:
    """Write ``catalog``'s images (bytes as stored) and labels as a shard set in ``out_dir``.

    Samples are shuffled (``seed``) so that every shard mixes landmarks, as streaming
    training wants. The set is written into a new hidden folder beside ``out_dir`` and
    renamed into place when complete, with its ``shards.json``. ``out_dir`` must be new or
    empty; with ``replace`` it may hold a shard set, which is replaced whole. It may not
    overlap the folder the catalog is read from.
    """
    if per_shard < 1:
        raise ShardSetError(f"per_shard={per_shard}: must be at least 1")
    out = Path(out_dir).expanduser().absolute()
    _check_out(out, catalog.root, replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        records = list(catalog.records)
        random.Random(seed).shuffle(records)
        entries = []
        for start in range(0, len(records), per_shard):
            name = SHARD_PATTERN.format(len(entries))
            chunk = records[start : start + per_shard]
            with (work / name).open("wb") as f:
                _write_tar(f, catalog, start, chunk)
                f.flush()
                os.fsync(f.fileno())
            size, digest = (work / name).stat().st_size, file_digest(work / name)
            entries.append({"name": name, "samples": len(chunk), "bytes": size, "blake2b": digest})
        atomic_write_json(
            work / SET_MANIFEST,
            {"format": SET_FORMAT, "samples": len(records), "shards": entries},
        )
        _move_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone when renamed into place
    return [out / entry["name"] for entry in entries]


def _write_tar(f: BinaryIO, catalog: Catalog, start: int, records: Sequence) -> None:
    with tarfile.open(fileobj=f, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for i, record in enumerate(records, start):
            key = f"{i:09d}"
            labels = {
                "category": record.category,
                "landmark": record.landmark,
                "path": catalog.key(record.path),
            }
            ext = record.path.suffix.lower().lstrip(".") or "img"
            _add(tar, f"{key}.{ext}", catalog.read(record.path))
            _add(
                tar,
                f"{key}.json",
                json.dumps(labels).encode("ascii"),
            )


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
