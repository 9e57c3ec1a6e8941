"""A persistent index of a data source's files, so that a run on unchanged data reads none.

One SQLite file per source (under ``paths.cache_dir/catalog/``) holds, per image key, the
file's size and mtime_ns when it was read, and what reading it found: the content digest,
width, height and mode, or the reason it cannot be used. :func:`~landmark_tl.data.catalog.
build_catalog` stats each listed file and reuses the row when size and mtime are unchanged;
other files are read again: hashed, and verified as far as asked (:class:`Verify`: the
header only, the size and mode, or a full decode). A row is not trusted for
a file modified within :data:`RACY_NS` of its reading (as git does: a change in the same
clock tick would leave the mtime equal). The index is in WAL mode and written under a lock,
so joblib workers and data-parallel ranks can share it: one reads the files, the others
find the rows. A damaged index is discarded and rebuilt, never used; an index that cannot
be written (disk full, read-only) is kept as it is and the run stops naming it and the fix.

What is trusted: by default (``data.verify=stamp``) a file whose size and mtime_ns are
unchanged is taken to hold the bytes it held, as git and rsync do; bytes replaced with the
mtime put back are not seen. With ``rehash`` (``data.verify=digest``) every file is read
and hashed on every run and a row is used only when the digest matches (no decode again).

A decode that fails later (the feature pass decodes every image anyway) is recorded in the
file's row (:meth:`CatalogIndex.record_decoded`), so later runs skip that file unread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
from filelock import FileLock

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import ReasonedOSError, describe_os_error, printable
from landmark_tl.data.sqlite import connect, damaged

log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000  # a file modified this close to its reading is read again
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    read_ns INTEGER NOT NULL, verified INTEGER NOT NULL, digest TEXT,
    width INTEGER, height INTEGER, mode TEXT, problem BLOB) WITHOUT ROWID;
"""


class Verify(IntEnum):
    """How far a file was checked when read; a row serves a run that asks as much or less."""

    none = 0  # hashed only
    header = 1  # hashed, and its header read (size, mode): a decoder opens it; no pixels
    decode = 2  # hashed and fully decoded


@dataclass(frozen=True, slots=True)  # many: no per-object dict
class Inspection:
    """What reading one image found: a reason it cannot be used (None: usable), the digest
    of its bytes, and (when decoded) its stored width, height and mode."""

    problem: str | None
    digest: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None


@dataclass
class Verdicts:
    """What reading n images found, compactly (no object per image): the digest of each
    image's bytes (None: not read yet, or unreadable) and why each unusable one is."""

    digests: list[str | None]
    problems: dict[int, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> Verdicts:
        return cls([None] * n)

    def known(self, i: int) -> bool:
        return self.digests[i] is not None or i in self.problems

    def forget(self, i: int) -> None:
        """Make image i unknown again (to be read)."""
        self.digests[i] = None
        self.problems.pop(i, None)

    def set(self, i: int, found: Inspection) -> None:
        self.digests[i] = found.digest
        if found.problem is not None:
            self.problems[i] = found.problem


@dataclass(frozen=True, slots=True)  # many: no per-object dict
class Stamp:
    """A file's size and modification time: unchanged, its index row still holds."""

    size: int
    mtime_ns: int


class CatalogIndexError(UserError, ReasonedOSError):
    """The catalog index cannot be opened or written; the message names it and the fix."""


class CatalogIndex:
    """The index file at ``path`` (created when missing)."""

    def __init__(self, path: str | Path, *, rehash: bool = False) -> None:
        self.path = Path(path)
        self.rehash = rehash  # trust a row only when the file's digest still matches
        self._checked = False
        self._lock: FileLock | None = None

    @classmethod
    def for_source(
        cls,
        cache_dir: str | Path,
        kind: str,
        root: Path,
        *,
        max_pixels: int | None = None,
        rehash: bool = False,
    ) -> CatalogIndex:
        """The index of the ``kind`` source at ``root``, kept under ``cache_dir/catalog``;
        one per pixel limit (its verdicts depend on it)."""
        text = str(root) if max_pixels is None else f"{root}|max_pixels={max_pixels}"
        name = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8)
        path = Path(cache_dir) / "catalog" / f"{kind}-{name.hexdigest()}.sqlite"
        return cls(path, rehash=rehash)

    def lock(self) -> FileLock:
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(f"{self.path}.lock")
        return self._lock

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(self.path, schema=_SCHEMA, check=not self._checked)
        except sqlite3.DatabaseError as error:
            if not damaged(error):  # disk full, read-only, I/O: the index is not at fault
                raise self._cannot_write(error) from error
            log.warning(
                "%s: damaged catalog index (%s): discarding it; the files are read again",
                printable(str(self.path)),
                error,
            )
            with self.lock():
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            db = connect(self.path, schema=_SCHEMA, check=False)
        except OSError as error:
            raise CatalogIndexError(
                error.errno,
                f"{printable(str(self.path))}: catalog index cannot be opened "
                f"({describe_os_error(error)}); fix its permissions or set paths.cache_dir "
                "(env LANDMARK_TL_CACHE) to a folder you can write",
            ) from error
        self._checked = True
        try:
            yield db
        except sqlite3.OperationalError as error:  # a write failed: the transaction rolls back
            raise self._cannot_write(error) from error
        finally:
            db.close()

    def _cannot_write(self, error: sqlite3.Error) -> CatalogIndexError:
        full = getattr(error, "sqlite_errorname", "") == "SQLITE_FULL"
        fix = "free disk space" if full else "fix its permissions or free disk space"
        return CatalogIndexError(
            errno.ENOSPC if full else errno.EIO,
            f"{printable(str(self.path))}: catalog index cannot be written ({error}); it is "
            f"kept as it was (what it held is intact): {fix}, or set paths.cache_dir (env "
            "LANDMARK_TL_CACHE) to a disk with room, and run again",
        )

    def known(
        self,
        keys: Sequence[str],
        sizes: np.ndarray,
        mtimes: np.ndarray,
        verify: Verify,
        into: Verdicts,
    ) -> int:
        """Set ``into`` for the keys whose row still holds (same size and mtime_ns, not racy,
        checked at least as far as ``verify``, or found unusable); a negative size marks a
        file that cannot be stat-ed. Returns the number of rows of keys not listed."""
        position = {key: i for i, key in enumerate(keys)}
        stale = 0
        with self._db() as db:
            for key, size, mtime, read_ns, verified, digest, problem in db.execute(
                "SELECT key, size, mtime_ns, read_ns, verified, digest, problem FROM files"
            ):
                i = position.get(_text(key))
                if i is None:
                    stale += 1
                elif (
                    sizes[i] == size
                    and mtimes[i] == mtime
                    and mtime < read_ns - RACY_NS
                    and (verified >= verify or problem is not None)
                ):
                    into.digests[i] = digest
                    if problem is not None:
                        into.problems[i] = _text(problem)
        return stale

    def record(
        self,
        keys: Sequence[str],
        stamps: Sequence[Stamp],
        inspections: Sequence[Inspection],
        verify: Verify,
        read_ns: int,
    ) -> None:
        """Store what reading ``keys`` (stamped before the read, at ``read_ns``) found."""
        with self._db() as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (_blob(key), s.size, s.mtime_ns, read_ns, int(verify), *_fields(found))
                    for key, s, found in zip(keys, stamps, inspections, strict=True)
                ),
            )

    def record_decoded(self, found: Iterable[tuple[str, str, str | None]]) -> None:
        """Record (key, digest, reason or None) of images whose bytes with that digest were
        fully decoded after the index read them (by the feature pass): the row then serves
        runs that ask for :attr:`Verify.decode`, and one that failed (with its reason) is
        skipped by later runs without decoding it again, as long as the file is unchanged."""
        with self._db() as db, db:
            db.executemany(
                "UPDATE files SET problem = ?, verified = ? WHERE key = ? AND digest = ?",
                (
                    (None if why is None else _blob(why), int(Verify.decode), _blob(k), d)
                    for k, d, why in found
                ),
            )

    def forget(self, keep: Sequence[str]) -> int:
        """Remove the rows of keys not in ``keep`` (files gone or no longer listed)."""
        with self._db() as db, db:
            db.execute("CREATE TEMP TABLE listed (key BLOB PRIMARY KEY) WITHOUT ROWID")
            db.executemany("INSERT OR IGNORE INTO listed VALUES (?)", ((_blob(k),) for k in keep))
            gone = db.execute("DELETE FROM files WHERE key NOT IN (SELECT key FROM listed)")
            return gone.rowcount

    def image_info(self) -> Iterator[tuple[str, int | None, int | None, str | None]]:
        """(key, width, height, mode) of every readable image in the index."""
        with self._db() as db:
            for key, *info in db.execute(
                "SELECT key, width, height, mode FROM files WHERE problem IS NULL"
            ):
                yield _text(key), *info


def _fields(found: Inspection) -> tuple:
    problem = None if found.problem is None else _blob(found.problem)
    return found.digest, found.width, found.height, found.mode, problem


def _blob(text: str) -> bytes:
    """A key (or reason) as stored: file names may hold undecodable bytes (surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def _text(blob: bytes) -> str:
    return blob.decode("utf-8", "surrogateescape")
