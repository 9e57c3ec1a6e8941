"""``data=shards``: WebDataset tar shards, and writing them from any other source.

A shard is an uncompressed tar file; each sample is two members with the same key (the
name up to the first dot): ``<key>.<ext>``, the image bytes exactly as they were stored,
and ``<key>.json``, ``{"category", "landmark", "path"}`` with the image's original path
relative to its data root. This is the layout WebDataset (and timm, open_clip) stream.

Reading uses the standard library's ``tarfile`` rather than the ``webdataset`` package:
the catalog needs every sample's labels before the split, and decoding a subset of images
needs random access. One pass over the tar headers records each image's offset and size
(image bytes are skipped, not read); an image is then read by seeking. Samples keep their
original path as key, so a split made on the original data applies unchanged.

A corrupt member (bad JSON, an image without labels) and a truncated tar are reported as
problems; the rest of the shards is used.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from landmark_tl.data.catalog import Catalog, CatalogError, NamedBytes, Problem, show
from landmark_tl.data.index import Stamp
from landmark_tl.data.sources import Candidate, ImageSource, Listing
from landmark_tl.io import atomic_write, printable

SHARD_PATTERN = "shard-{:06d}.tar"


@dataclass(frozen=True)
class _Member:
    """Where an image's bytes lie: which shard, at what offset, how many."""

    shard: Path
    offset: int
    size: int
    mtime_ns: int  # of the shard file when it was listed


class ShardSource(ImageSource):
    """The samples of every ``*.tar`` shard in ``root`` (sorted by name)."""

    name = "shards"

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._members: dict[str, _Member] = {}

    def shards(self) -> list[Path]:
        """The shard files, in name order."""
        if not self.root.is_dir():
            raise CatalogError(f"{show(self.root)}: shard folder does not exist; check data.root")
        shards = sorted(self.root.glob("*.tar"))
        if not shards:
            raise CatalogError(
                f"{show(self.root)}: no *.tar shards; write them with python -m landmark_tl.shards"
            )
        return shards

    def listing(self) -> Listing:
        listing = Listing()
        self._members = {}
        for shard in self.shards():
            for key, labels, member in _samples(shard, listing):
                if key in self._members:
                    reason = f"path listed again in {shard.name}; the first copy is used"
                    listing.problems.append(Problem(self.path(key), reason))
                    continue
                self._members[key] = member
                listing.candidates.append(Candidate(key, labels["category"], labels["landmark"]))
        return listing

    def stamp(self, key: str) -> Stamp:
        """A member's size and its shard's modification time (a rewritten shard is new)."""
        if not self._members:
            self.listing()
        member = self._members[key]
        return Stamp(member.size, member.mtime_ns)

    def shard_of(self, key: str) -> Path:
        """The shard file that holds the image of ``key``."""
        if not self._members:
            self.listing()
        return self._members[key].shard

    def read(self, key: str) -> bytes:
        if not self._members:
            self.listing()
        member = self._members[key]
        with member.shard.open("rb") as f:
            f.seek(member.offset)
            data = f.read(member.size)
        if len(data) != member.size:
            raise OSError(
                f"truncated shard {member.shard.name}: {len(data)} of {member.size} bytes"
            )
        return data

    def open(self, key: str) -> BinaryIO:
        return NamedBytes(self.read(key), key)


def _samples(shard: Path, listing: Listing) -> Iterator[tuple[str, dict[str, str], _Member]]:
    """(original path, labels, image member) of each complete sample of ``shard``."""
    images: dict[str, _Member] = {}
    labels: dict[str, dict[str, str]] = {}
    try:
        mtime_ns = shard.stat().st_mtime_ns
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                sample, _, ext = info.name.partition(".")
                if ext == "json":
                    parsed = _labels(tar, info, shard, listing)
                    if parsed is not None:
                        labels[sample] = parsed
                else:
                    images[sample] = _Member(shard, info.offset_data, info.size, mtime_ns)
    except (tarfile.TarError, EOFError, OSError) as error:
        listing.problems.append(
            Problem(shard, f"truncated or corrupt tar ({error}); the samples before it are used")
        )
    for sample in sorted(images.keys() | labels.keys()):
        if sample not in labels:
            reason = f"{shard.name}: image member {printable(sample)} has no usable .json labels"
            listing.problems.append(Problem(shard / sample, reason))
        elif sample not in images:
            reason = f"{shard.name}: labels of {printable(sample)} have no image member"
            listing.problems.append(Problem(shard / sample, reason))
        else:
            yield labels[sample]["path"], labels[sample], images[sample]


def _labels(
    tar: tarfile.TarFile, info: tarfile.TarInfo, shard: Path, listing: Listing
) -> dict[str, str] | None:
    """A sample's labels from its JSON member, or None (and a problem) when unusable."""
    try:
        data = json.loads(tar.extractfile(info).read())
        labels = {k: data[k] for k in ("category", "landmark", "path")}
        path = PurePosixPath(labels["path"])
        if not all(isinstance(v, str) and v for v in labels.values()):
            raise ValueError("category, landmark and path must be non-empty strings")
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"path {labels['path']!r} must be relative, without '..'")
    except (ValueError, KeyError, TypeError) as error:
        reason = f"{shard.name}: corrupt labels member {printable(info.name)} ({error!r})"
        listing.problems.append(Problem(shard / info.name, reason))
        return None
    return labels


def write_shards(
    catalog: Catalog, out_dir: str | Path, per_shard: int = 1000, seed: int = 0
) -> list[Path]:
    """Write ``catalog``'s images (bytes as stored) and labels as shards in ``out_dir``.

    Samples are shuffled (``seed``) so that every shard mixes landmarks, as streaming
    training wants; each shard is written atomically.
    """
    if per_shard < 1:
        raise ValueError(f"per_shard={per_shard}: must be at least 1")
    out_dir = Path(out_dir)
    records = list(catalog.records)
    random.Random(seed).shuffle(records)
    written = []
    for start in range(0, len(records), per_shard):
        shard = out_dir / SHARD_PATTERN.format(len(written))
        chunk = records[start : start + per_shard]
        atomic_write(shard, lambda f, s=start, c=chunk: _write_tar(f, catalog, s, c))
        written.append(shard)
    return written


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
