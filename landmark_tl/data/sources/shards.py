"""``data=shards``: WebDataset tar shards (written by ``data/shard_writer.py``).

A shard is an uncompressed tar file; each sample is two members with the same key (the
name up to the first dot): ``<key>.<ext>``, the image bytes exactly as they were stored,
and ``<key>.json``, ``{"category", "landmark", "path"}`` with the image's original path
relative to its data root. This is the layout WebDataset (and timm, open_clip) stream.

Reading uses the standard library's ``tarfile`` rather than the ``webdataset`` package:
the catalog needs every sample's labels before the split, and decoding a subset of images
needs random access. One pass over the tar headers records each image's offset and size
(image bytes are skipped, not read); an image is then read by seeking. Samples keep their
original path as key, so a split made on the original data applies unchanged.

A corrupt member (bad JSON, an image without labels, a member key used twice) and a
truncated tar are reported as problems; the rest of the shards is used.

A set is written atomically (:func:`write_shards`): into a new hidden folder beside ``out``,
renamed into place when complete, with ``shards.json`` listing each shard's name, sample
count, size and BLAKE2b digest. A reader refuses a set whose ``*.tar`` files are not the
ones listed (a stray shard of another set, a missing one) or whose sizes differ, and with
``data.verify=digest`` also one whose digests differ. Sets without ``shards.json`` (written
by hand or by older versions) are read as before, with a note that they cannot be checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import describe_os_error, file_digest, printable, require_regular_file
from landmark_tl.data.config import DataConfig, DataVerify
from landmark_tl.data.index import Stamp
from landmark_tl.data.records import CatalogError, NamedBytes, Problem, show
from landmark_tl.data.sources.base import Candidate, ImageSource, Listing
from landmark_tl.data.sources.registry import register_source

SHARD_PATTERN = "shard-{:06d}.tar"
SET_MANIFEST = "shards.json"  # the set's shards: name, samples, bytes, blake2b
SET_FORMAT = "landmark_tl shard set 1"


class ShardSetError(UserError, ValueError):
    """A shard set cannot be written where asked; the message names the folder and the fix."""


@dataclass(frozen=True)
class _Member:
    """Where an image's bytes lie: which shard, at what offset, how many."""

    shard: Path
    offset: int
    size: int
    mtime_ns: int  # of the shard file when it was listed


@dataclass
class ShardsConfig(DataConfig):
    source: str = "shards"  # no keys of its own; data.verify=digest also checks the shards


@register_source(ShardsConfig)
class ShardSource(ImageSource):
    """The samples of every ``*.tar`` shard in ``root`` (sorted by name)."""

    name = "shards"

    def __init__(self, root: str | Path, *, check_digests: bool = False) -> None:
        super().__init__(root)
        self.check_digests = check_digests  # data.verify=digest: hash every shard when listing
        self._members: dict[str, _Member] = {}

    @classmethod
    def from_config(cls, data: DataConfig, cache_dir: Path) -> ShardSource:
        return cls(data.required_root(), check_digests=data.verify is DataVerify.digest)

    def shards(self) -> list[Path]:
        """The shard files, in name order; refused when they are not the set's
        ``shards.json`` lists (see the module doc)."""
        if not self.root.is_dir():
            raise CatalogError(f"{show(self.root)}: shard folder does not exist; check data.root")
        shards = sorted(self.root.glob("*.tar"))
        if not shards:
            raise CatalogError(
                f"{show(self.root)}: no *.tar shards; write them with python -m landmark_tl.shards"
            )
        for shard in shards:
            self.require_inside_root(shard)
        expected = self.expected()
        if expected is not None:
            _check_set(self.root, shards, expected, self.check_digests)
        return shards

    def expected(self) -> dict[str, dict] | None:
        """The shards the set's ``shards.json`` lists, by name (None: the set has none)."""
        path = self.root / SET_MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(self.read_file(path))
            if data["format"] != SET_FORMAT:
                raise ValueError(f"format {data['format']!r}, expected {SET_FORMAT!r}")
            return {entry["name"]: entry for entry in data["shards"]}
        except (ValueError, KeyError, TypeError) as error:
            raise CatalogError(
                f"{show(path)}: damaged shard set manifest ({error}); write the set again "
                "with landmark-tl shards"
            ) from error

    def read_file(self, path: Path) -> bytes:
        """A small file of the set, refused (before opening) when not a regular file."""
        try:
            require_regular_file(path)
            return path.read_bytes()
        except OSError as error:
            raise CatalogError(
                f"{show(path)}: cannot be read ({describe_os_error(error)}); write the set "
                "again with landmark-tl shards"
            ) from error

    def listing(self) -> Listing:
        listing = Listing()
        self._members = {}
        shards = self.shards()
        expected = self.expected()
        if expected is None:
            listing.notes.append(
                f"{show(self.root)} has no {SET_MANIFEST} (written by hand or by an older "
                "version): stray or missing shards cannot be detected; write the set again "
                "with landmark-tl shards to check it"
            )
        for shard in shards:
            samples = 0
            for key, labels, member in _samples(shard, listing):
                samples += 1
                if key in self._members:
                    reason = f"path listed again in {shard.name}; the first copy is used"
                    listing.problems.append(Problem(self.path(key), reason))
                    continue
                self._members[key] = member
                listing.candidates.append(Candidate(key, labels["category"], labels["landmark"]))
            listed = expected[shard.name]["samples"] if expected is not None else samples
            if samples != listed:
                reason = f"holds {samples} complete samples, {SET_MANIFEST} lists {listed}"
                listing.problems.append(Problem(shard, reason))
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
    repeated: set[str] = set()  # samples with two image or two label members: ambiguous
    try:
        mtime_ns = shard.stat().st_mtime_ns
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                sample, _, ext = info.name.partition(".")
                if sample in (labels if ext == "json" else images):
                    repeated.add(sample)
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
        if sample in repeated:
            reason = (
                f"{shard.name}: member key {printable(sample)} is used by more than one sample: "
                "ambiguous, left out; write the shard again with unique keys"
            )
            listing.problems.append(Problem(shard / sample, reason))
        elif sample not in labels:
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


def _check_out(out: Path, root: Path, replace: bool) -> None:
    """Refuse an ``out=`` that is a file, overlaps the data read, or holds other files."""
    where = f"out={show(out)}"
    if out.exists() and not out.is_dir():
        raise ShardSetError(f"{where}: is a file, not a folder; give a new folder for the set")
    real_out, real_root = Path(os.path.realpath(out)), Path(os.path.realpath(root))
    if real_out.is_relative_to(real_root) or real_root.is_relative_to(real_out):
        raise ShardSetError(
            f"{where}: overlaps the folder the data is read from ({show(root)}); a set is "
            "never written where it is read: give a new folder, then point data.root at it"
        )
    entries = sorted(os.listdir(out)) if out.is_dir() else []
    if entries and not replace:
        raise ShardSetError(
            f"{where}: not empty ({len(entries)} entries, e.g. {printable(entries[0])}); "
            "give a new folder, or add replace=true to replace the shard set in it"
        )
    others = [e for e in entries if e != SET_MANIFEST and not e.endswith(".tar")]
    if others:
        raise ShardSetError(
            f"{where}: holds files that are not a shard set (e.g. {printable(others[0])}); "
            "replace=true replaces only a shard set: give a new folder"
        )


def _move_into_place(work: Path, out: Path) -> None:
    """Rename the complete set ``work`` to ``out``; an earlier set there is moved aside
    first and deleted after (a reader finds the old set, no set, or the new one)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old)  # onto the empty folder just made
        os.replace(work, out)
        shutil.rmtree(old)
    else:
        os.replace(work, out)


def _check_set(
    root: Path, shards: Sequence[Path], expected: dict[str, dict], digests: bool
) -> None:
    """Refuse shards that are not the ones ``shards.json`` lists, or differ from them."""
    found = {shard.name for shard in shards}
    stray, missing = sorted(found - expected.keys()), sorted(expected.keys() - found)
    fix = "write the set again with landmark-tl shards (into a new folder)"
    if stray:
        raise CatalogError(
            f"{show(root)}: {len(stray)} shards are not in the set's {SET_MANIFEST} (e.g. "
            f"{printable(stray[0])}: left from another set?); remove them, or {fix}"
        )
    if missing:
        raise CatalogError(
            f"{show(root)}: {len(missing)} shards of the set's {SET_MANIFEST} are missing "
            f"(e.g. {printable(missing[0])}); restore them, or {fix}"
        )
    for shard in shards:
        entry, size = expected[shard.name], shard.stat().st_size
        if size != entry["bytes"]:
            raise CatalogError(
                f"{show(shard)}: {size} bytes, {SET_MANIFEST} says {entry['bytes']}: changed or "
                f"truncated since written; restore it, or {fix}"
            )
        if digests and file_digest(shard) != entry["blake2b"]:
            raise CatalogError(
                f"{show(shard)}: its bytes differ from the digest in {SET_MANIFEST} "
                f"(data.verify=digest): changed since written; restore it, or {fix}"
            )
