"""The catalog: readable images, their labels and hierarchy, and every file that was skipped.

:func:`build_catalog` reads what a data source (:mod:`landmark_tl.data.sources`) lists:
every image ends up accounted for, as a record or as a :class:`Problem` with a one-line
reason (unreadable, truncated, duplicate, unsupported format). A source that cannot be used
at all raises :class:`CatalogError` naming the file or folder and the fix. With a
:class:`~landmark_tl.data.index.CatalogIndex`, files unchanged since an earlier read are
only stat-ed: their digest and verdict come from the index. Decoding one image is
:mod:`landmark_tl.data.decode`.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.core.io import (
    atomic_write_text,
    bytes_digest,
    file_digests,
    printable,
    require_regular_file,
)
from landmark_tl.data.decode import (
    AVIF_HINT,
    avif_supported,
    check_pixels,
    load_rgb,
    strict_decoding,
)
from landmark_tl.data.index import CatalogIndex, Inspection, Stamp, Verdicts, Verify
from landmark_tl.data.records import (
    CatalogError,
    DroppedLandmark,
    ImageRecord,
    NamedBytes,
    Problem,
    raise_all,
    show,
)

if TYPE_CHECKING:
    from landmark_tl.data.sources import ImageSource, Listing

log = logging.getLogger(__name__)

_CHUNK = 4096  # images read (and recorded in the index) at a time
_SMALLEST = (1, 1)  # a draft size: a JPEG decodes at 1/8 per side


@dataclass
class Catalog:
    """The readable images of a data set, their label hierarchy and what was left out.

    ``source`` reads an image's bytes (None: records are plain files); ``dropped`` lists
    whole landmarks left out, ``notes`` remarks of the source for the data report;
    ``index`` is the catalog index it was read through (None: none).
    """

    root: Path
    records: list[ImageRecord]
    hierarchy: LabelHierarchy
    problems: list[Problem] = field(default_factory=list)
    digests: dict[Path, str] = field(default_factory=dict)  # content digest by path
    dropped: list[DroppedLandmark] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: ImageSource | None = None
    index: CatalogIndex | None = None

    def content_digests(self) -> list[str]:
        """Content digest of each record (read once by the scan, computed here if not)."""
        missing = [r.path for r in self.records if r.path not in self.digests]
        if self.source is None:
            found = file_digests(missing)
        else:
            found = [bytes_digest(self.read(path)) for path in missing]
        self.digests.update(zip(missing, found, strict=True))
        return [self.digests[r.path] for r in self.records]

    def key(self, path: Path) -> str:
        """The stable key of an image: its path relative to the root, POSIX style."""
        text, root = os.fspath(path), os.fspath(self.root) + os.sep
        if text.startswith(root):  # a record's path: cut the root off (relative_to is slow)
            return text[len(root) :].replace(os.sep, "/")
        return path.relative_to(self.root).as_posix()

    def read(self, path: Path) -> bytes:
        """The stored bytes of the image at ``path`` (a record's path)."""
        with self.open(path) as f:
            return f.read()

    def open(self, path: Path) -> BinaryIO:
        """The stored bytes of the image at ``path`` (a record's path), as a file to read."""
        if self.source is None:
            require_regular_file(path)  # a FIFO would block the open forever
            return open(path, "rb")  # noqa: SIM115 (the caller closes it)
        return self.source.open(self.key(path))

    def image_info(self) -> Iterator[tuple[Path, tuple[int, int], str]]:
        """(path, (width, height), mode) of each record as stored: from the index when the
        catalog has one (no file is opened), else from each image's header."""
        if self.index is not None:
            wanted = {self.key(r.path): r.path for r in self.records}
            for key, width, height, mode in self.index.image_info():
                if key in wanted and width is not None:
                    yield wanted[key], (width, height), mode
            return
        for record in self.records:
            with self.open(record.path) as f, Image.open(f) as image:
                yield record.path, image.size, image.mode

    def labels(self) -> tuple[list[int], list[int]]:
        """Category index and landmark index of each record."""
        categories = {name: i for i, name in enumerate(self.hierarchy.categories)}
        landmarks = {pair: i for i, pair in enumerate(self.hierarchy.landmarks)}
        return (
            [categories[r.category] for r in self.records],
            [landmarks[(r.category, r.landmark)] for r in self.records],
        )

    def write_problem_report(self, path: str | Path) -> None:
        """Write the problems as CSV ``path,reason`` atomically (header only when none)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows([str(problem.path), problem.reason] for problem in self.problems)
        atomic_write_text(path, buffer.getvalue())


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No automatic garbage collection inside: building a few objects per image (records,
    paths, stamps) triggers full collections that walk every object the libraries
    imported (torch, Lightning, Hydra: millions), which cost a warm 10k-image setup about
    half of its time (~50 µs per image). Nothing built here is cyclic garbage; the
    collector runs again afterwards. For bounded setup work only, not for long passes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_catalog(
    source: ImageSource,
    *,
    verify: bool | Verify = True,
    workers: int | None = None,
    index: CatalogIndex | None = None,
) -> Catalog:
    """Read every image ``source`` lists into a :class:`Catalog`.

    Each image's bytes are read once (in ``workers`` threads, default one per CPU) and
    hashed (for duplicates and the feature cache); how far they are checked is ``verify``
    (True: :attr:`Verify.decode`, a full decode, so that unreadable ones become problems;
    :attr:`Verify.header`: the header only, size and mode, for a caller that decodes every
    image anyway, as the feature pass does, and reports what fails then; False: names
    only). With ``index``, only files new or changed since the index read them are read.
    """
    verify = Verify.decode if verify is True else Verify.none if verify is False else verify
    listing = source.listing()
    keys = [c.key for c in listing.candidates]
    if index is None:
        verdicts = Verdicts.empty(len(keys))
        for start, found in _inspect_chunks(source, keys, verify=verify, workers=workers):
            for i, inspection in enumerate(found, start):
                verdicts.set(i, inspection)
    else:
        verdicts = _inspect_indexed(source, keys, index, listing, verify, workers)
    del keys
    records: list[ImageRecord] = []
    failed: list[tuple[ImageRecord, str]] = []
    by_path: dict[Path, str] = {}
    for i, candidate in enumerate(listing.candidates):
        record = ImageRecord(source.path(candidate.key), candidate.category, candidate.landmark)
        problem = verdicts.problems.get(i)
        if problem is None:
            records.append(record)
            by_path[record.path] = verdicts.digests[i]
        else:
            failed.append((record, problem))
    del verdicts
    listing.candidates = []  # read: free them before the records are sorted and checked
    records, duplicates = _without_duplicates(records, by_path)
    failed += duplicates
    problems = listing.problems + [Problem(record.path, reason) for record, reason in failed]
    _check_readable(source.root, records, failed, problems)
    # labels first, then Path order (a key of .parts or a split string would make or keep a
    # tuple, list or strings per image: tens of MB at 100k images)
    records.sort(key=lambda r: (r.category, r.landmark, r.path))
    problems.sort(key=lambda p: str(p.path))
    hierarchy = LabelHierarchy.from_pairs((r.category, r.landmark) for r in records)
    _log_summary(source.root, records, hierarchy, problems, listing.ignored)
    return Catalog(
        source.root,
        records,
        hierarchy,
        problems,
        {r.path: by_path[r.path] for r in records},
        dropped=listing.dropped,
        notes=listing.notes,
        source=source,
        index=index,
    )


def scan_image_folder(
    root: str | Path, *, verify: bool = True, workers: int | None = None
) -> Catalog:
    """Scan ``<root>/<category>/<landmark>/<image>`` into a :class:`Catalog`."""
    from landmark_tl.data.sources.folder import FolderSource

    return build_catalog(FolderSource(root), verify=verify, workers=workers)


def _inspect_chunks(
    source: ImageSource, keys: Sequence[str], *, verify: Verify, workers: int | None
) -> Iterator[tuple[int, list[Inspection]]]:
    """What reading each key's image finds (why it cannot be used, its digest, size, mode),
    a chunk of keys at a time (position of its first key, inspections): few pending
    futures, and few inspections alive at once."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    inspect = partial(
        _inspect, source, avif=avif_supported(), verify=verify, max_pixels=source.max_pixels
    )
    with strict_decoding(), ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(keys), _CHUNK):
            yield start, list(pool.map(inspect, keys[start : start + _CHUNK]))


def _inspect(
    source: ImageSource, key: str, *, avif: bool, verify: Verify, max_pixels: int | None
) -> Inspection:
    if not avif and key.lower().endswith(".avif"):
        return Inspection(AVIF_HINT)
    try:
        data = source.read(key)
    except OSError as error:
        return Inspection(_unreadable(error))
    digest = bytes_digest(data)
    if verify is Verify.none:
        return Inspection(None, digest)
    try:
        with Image.open(NamedBytes(data, key)) as image:
            (width, height), mode = image.size, image.mode
            image.draft(mode, _SMALLEST)  # as small as the decoder allows
            check_pixels(image.size, max_pixels)
        if verify is Verify.decode:  # every byte decoded, at the smallest size (less memory)
            load_rgb(NamedBytes(data, key), draft=_SMALLEST)
    except Exception as error:  # any decoder failure makes this file unusable, not the scan
        return Inspection(_unreadable(error), digest)
    return Inspection(None, digest, width, height, mode)


def _inspect_indexed(
    source: ImageSource,
    keys: Sequence[str],
    index: CatalogIndex,
    listing: Listing,
    verify: Verify,
    workers: int | None,
) -> Verdicts:
    """As :func:`_inspect_chunks`, reading only the files the index does not know unchanged.

    The files are read under the index's lock, after looking again: of processes started
    together, one reads and the others find its rows. A file that vanished after it was
    listed is a problem; rows of files no longer listed are dropped, with a note. Stamps
    are kept as arrays (no object per file)."""
    sizes = np.full(len(keys), -1, dtype=np.int64)  # -1: cannot be stat-ed
    mtimes = np.zeros(len(keys), dtype=np.int64)
    gone: dict[int, str] = {}
    for i, key in enumerate(keys):
        try:
            stamp = source.stamp(key)
        except OSError as error:
            gone[i] = f"deleted or unreadable after it was listed ({_one_line(str(error))})"
            continue
        sizes[i], mtimes[i] = stamp.size, stamp.mtime_ns
    verdicts = Verdicts.empty(len(keys))
    stale = index.known(keys, sizes, mtimes, verify, verdicts)
    changed = _changed_bytes(source, keys, verdicts, workers) if index.rehash else []
    if sum(map(verdicts.known, range(len(keys)))) + len(gone) < len(keys) or stale:
        with index.lock():
            verdicts = Verdicts.empty(len(keys))
            stale = index.known(keys, sizes, mtimes, verify, verdicts)
            for i in changed:
                verdicts.forget(i)
            todo = [i for i in range(len(keys)) if not verdicts.known(i) and i not in gone]
            for start in range(0, len(todo), _CHUNK):  # recorded as read: a kill keeps them
                part = todo[start : start + _CHUNK]
                read_ns = time.time_ns()
                names = [keys[i] for i in part]
                ((_, found),) = _inspect_chunks(source, names, verify=verify, workers=workers)
                stamps = [Stamp(int(sizes[i]), int(mtimes[i])) for i in part]
                index.record(names, stamps, found, verify, read_ns)
                for i, inspection in zip(part, found, strict=True):
                    verdicts.set(i, inspection)
            if todo:
                log.info(
                    "%s: read %d new or changed files; %d unchanged since indexed",
                    show(source.root),
                    len(todo),
                    len(keys) - len(todo),
                )
            if stale:
                listing.notes.append(
                    f"{index.forget(keys)} files indexed by an earlier run are no longer "
                    "listed (deleted, moved or filtered out): removed from the catalog index"
                )
    verdicts.problems.update(gone)
    return verdicts


def _changed_bytes(
    source: ImageSource, keys: Sequence[str], verdicts: Verdicts, workers: int | None
) -> list[int]:
    """Positions of the files the index knows whose bytes no longer have the digest it
    holds (``data.verify=digest``: size and mtime are not trusted); their verdicts are
    forgotten, so that they are read again. Each file is read and hashed, not decoded."""
    rows = [i for i, digest in enumerate(verdicts.digests) if digest is not None]

    def digest(i: int) -> str | None:
        try:
            return bytes_digest(source.read(keys[i]))
        except OSError:
            return None  # read again (and reported) with the new and changed files

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        found = pool.map(digest, rows)
        changed = [i for i, now in zip(rows, found, strict=True) if now != verdicts.digests[i]]
    for i in changed:
        verdicts.forget(i)
    if changed:
        log.info("%s: %d files changed with size and mtime kept", show(source.root), len(changed))
    return changed


def _unreadable(error: BaseException) -> str:
    return f"unreadable: {type(error).__name__}: {_one_line(str(error))}"


def _one_line(text: str) -> str:
    return printable(" ".join(text.split()))


def _without_duplicates(
    records: Sequence[ImageRecord], digests: dict[Path, str]
) -> tuple[list[ImageRecord], list[tuple[ImageRecord, str]]]:
    """Drop byte-identical copies: under two landmarks the label is ambiguous, so every copy
    goes; within one landmark the first stays, so a copy cannot sit in train and test."""
    first: dict[str, ImageRecord] = {}  # the first record of each digest
    labels: dict[str, set[tuple[str, str]]] = {}  # the labels of digests that have several
    for record in records:
        digest = digests[record.path]
        one = first.setdefault(digest, record)
        if (one.category, one.landmark) != (record.category, record.landmark):
            labels.setdefault(digest, {(one.category, one.landmark)})
            labels[digest].add((record.category, record.landmark))
    kept: list[ImageRecord] = []
    dropped: list[tuple[ImageRecord, str]] = []
    for record in records:
        digest = digests[record.path]
        if digest in labels:
            others = sorted("/".join(map(printable, p)) for p in labels[digest])
            reason = f"same bytes under several landmarks ({', '.join(others)}): ambiguous label"
            dropped.append((record, reason))
        elif first[digest] is not record:
            reason = f"duplicate of {printable(first[digest].path.name)} in the same landmark"
            dropped.append((record, reason))
        else:
            kept.append(record)
    return kept, dropped


def _check_readable(
    root: Path,
    records: Sequence[ImageRecord],
    failed: Sequence[tuple[ImageRecord, str]],
    problems: Sequence[Problem],
) -> None:
    """Refuse a source with no readable image, or a landmark whose images all failed."""
    if not records:
        if not problems:
            raise CatalogError(f"{show(root)}: lists no images; check data.source and data.root")
        first = failed[0] if failed else (problems[0], problems[0].reason)
        raise CatalogError(
            f"{show(root)}: no readable images: all {len(problems)} image files failed "
            f"(first: {show(first[0].path)}: {first[1]}); replace or remove the broken files"
        )
    readable = {(r.category, r.landmark) for r in records}
    counts: Counter[tuple[str, str]] = Counter()
    first_failed: dict[tuple[str, str], tuple[ImageRecord, str]] = {}
    for record, reason in failed:
        pair = (record.category, record.landmark)
        counts[pair] += 1
        first_failed.setdefault(pair, (record, reason))
    raise_all(
        root,
        [
            f"{show(record.path.parent)}: landmark {show('/'.join(pair))} has no readable "
            f"images: all {counts[pair]} image files are unreadable (e.g. "
            f"{show(record.path.name)}: {reason}); replace them or remove the landmark"
            for pair, (record, reason) in first_failed.items()
            if pair not in readable
        ],
    )


def _log_summary(
    root: Path,
    records: Sequence[ImageRecord],
    hierarchy: LabelHierarchy,
    problems: Sequence[Problem],
    ignored: Counter[str],
) -> None:
    log.info(
        "%s: %d images, %d categories, %d landmarks; ignored %d hidden entries and "
        "%d non-image files",
        show(root),
        len(records),
        hierarchy.num_categories,
        hierarchy.num_landmarks,
        ignored["hidden"],
        ignored["non-image"],
    )
    if problems:
        first = ", ".join(show(p.path) for p in problems[:3])
        log.warning(
            "%s: skipped %d image files (first: %s); see Catalog.problems or write_problem_report",
            show(root),
            len(problems),
            first,
        )
