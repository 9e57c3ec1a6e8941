"""The feature store: rows of one encoder's features, sharded on disk, and reading them.

A row is keyed by everything that changes it: the encoder (backbone name, weights digest,
preprocessing, precision of the pass), the view (name and parameters) and the content
digest of the image bytes that were encoded. The store lives outside any run dir
(``paths.cache_dir/features/<encoder>/<dtype>/``): per view, shards of rows (``.npy``,
memory-mapped when read), and ``index.sqlite`` mapping (view, digest) → (shard, row) with
each shard's checksum. A shard is written to a temporary file, flushed and renamed into
place before the one transaction that makes its rows visible, so a killed or failing
write leaves the store as it was; a damaged shard or index is detected, discarded and
recomputed, never used.

Reading (:class:`FeatureRows`) gathers a batch of rows from the memory-mapped shards; it
loads everything into memory only when that fits a budget. The rows are computed by the
feature pass (:mod:`landmark_tl.data.features.extraction`).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import mmap
import sqlite3
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import ReasonedOSError, atomic_write, describe_os_error, printable
from landmark_tl.data.sqlite import connect, damaged

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")
SHARD_BYTES = 16 << 20  # rows per shard: about this many bytes (one file per 16 MiB)
_CHUNK = 8 << 20  # bytes read at a time when checking a shard's checksum
MIN_CHUNK_ROWS = 8  # FeatureRows.chunks: fewest rows per chunk, whatever the budget
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    id INTEGER PRIMARY KEY, view TEXT NOT NULL, file TEXT NOT NULL UNIQUE,
    rows INTEGER NOT NULL, width INTEGER NOT NULL, bytes INTEGER NOT NULL,
    checksum INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    view TEXT NOT NULL, digest TEXT NOT NULL, shard INTEGER NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (view, digest)) WITHOUT ROWID;
"""


class FeatureStoreError(UserError, ReasonedOSError):
    """The feature store cannot be read or written; the message names the path and the fix."""


def _as_os_error(error: sqlite3.Error) -> OSError:
    """A SQLite error that is not damage (disk full, I/O) as the OSError it stands for."""
    full = getattr(error, "sqlite_errorname", "") == "SQLITE_FULL"
    return OSError(errno.ENOSPC if full else errno.EIO, str(error))


def _store_problem(path: Path, error: OSError, doing: str) -> FeatureStoreError:
    where = printable(str(path))
    if error.errno == errno.ENOSPC:
        return FeatureStoreError(
            errno.ENOSPC,
            f"{where}: the disk is full while {doing}; the store keeps what it held before "
            "(the features computed so far are committed): free space, or set "
            "paths.cache_dir (env LANDMARK_TL_CACHE) to a disk with room, and run again",
        )
    if isinstance(error, PermissionError):
        return FeatureStoreError(
            errno.EACCES,
            f"{where}: feature store cannot be read or written ({error.strerror or error}); "
            "fix the permissions of the cache (a shared cache needs group read and write, "
            "e.g. chmod -R g+rwX on it, and umask 002), or set paths.cache_dir "
            "(env LANDMARK_TL_CACHE) to a folder you can write",
        )
    return FeatureStoreError(error.errno, f"{where}: {doing} failed ({describe_os_error(error)})")


@dataclass(frozen=True)
class _Shard:
    id: int
    file: str
    rows: int
    width: int
    bytes: int
    checksum: int


class FeatureStore:
    """Rows of one encoder's features in ``root/<encoder>/<dtype>/`` (see the module doc).

    ``dtype`` is how rows are stored (``float16`` halves the disk and memory they take);
    ``shard_rows`` fixes the rows per shard (default: about 16 MiB of rows).
    """

    def __init__(
        self,
        root: str | Path,
        encoder: str,
        dtype: str = "float32",
        shard_rows: int | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"features.dtype={dtype}: use one of {list(DTYPES)}")
        self.dir = Path(root) / encoder / dtype
        self.dtype = np.dtype(dtype)
        self.shard_rows = shard_rows
        self._verified: set[int] = set()  # shards whose checksum this object checked
        self._checked = False  # whether this object checked the index's integrity
        self._lock: FileLock | None = None

    @property
    def index_path(self) -> Path:
        return self.dir / "index.sqlite"

    def lock(self) -> FileLock:
        """An inter-process lock on this store (held while computing and committing)."""
        if self._lock is None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise _store_problem(self.dir, error, "creating the store") from error
            self._lock = FileLock(self.dir / ".lock")  # one object per store: reentrant
        return self._lock

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the index (WAL: readers do not block the one writer); a damaged
        index is discarded with every shard it described, and the store starts empty."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            db = connect(self.index_path, schema=_SCHEMA, check=not self._checked)
        except sqlite3.DatabaseError as error:
            if not damaged(error):  # disk full, read-only, I/O: the index is not at fault
                problem = _store_problem(self.index_path, _as_os_error(error), "opening the index")
                raise problem from error
            self._discard_damaged_index(error)
            db = connect(self.index_path, schema=_SCHEMA, check=False)
        except OSError as error:
            raise _store_problem(self.index_path, error, "opening the index") from error
        self._checked = True
        try:
            yield db
        finally:
            db.close()

    def _discard_damaged_index(self, error: Exception) -> None:
        log.warning(
            "%s: damaged feature index (%s): discarding it and its shards; their features "
            "are recomputed",
            printable(str(self.index_path)),
            error,
        )
        with self.lock():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
            for shard in self.dir.glob("*/*.npy"):
                shard.unlink(missing_ok=True)

    def locate(self, view: str, digests: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(shard id, row) of each digest's row of ``view``; shard id -1 where absent. Shards
        are checked (size and checksum) once per store object; a damaged one is discarded."""
        wanted = {d: i for i, d in enumerate(digests)}
        shard_ids = np.full(len(digests), -1, dtype=np.int64)
        rows = np.zeros(len(digests), dtype=np.int64)
        with self._db() as db:
            for digest, shard, row in db.execute(
                "SELECT digest, shard, row FROM rows WHERE view = ?", (view,)
            ):
                i = wanted.get(digest)
                if i is not None:
                    shard_ids[i], rows[i] = shard, row
        shards = self._shards()
        for shard in np.unique(shard_ids[shard_ids >= 0]).tolist():
            if shard not in shards or not self._intact(shards[shard]):
                shard_ids[shard_ids == shard] = -1
        return shard_ids, rows

    def _shards(self) -> dict[int, _Shard]:
        with self._db() as db:
            found = db.execute("SELECT id, file, rows, width, bytes, checksum FROM shards")
            return {row[0]: _Shard(*row) for row in found}

    def _intact(self, shard: _Shard) -> bool:
        """Whether a shard's file has its recorded size and checksum; discards it if not."""
        if shard.id in self._verified:
            return True
        path = self.dir / shard.file
        try:
            intact = path.stat().st_size == shard.bytes and _checksum(path) == shard.checksum
        except FileNotFoundError:
            intact = False
        except OSError as error:
            raise _store_problem(path, error, "reading a shard") from error
        if intact:
            self._verified.add(shard.id)
            return True
        log.warning("damaged feature shard %s: discarding it; its rows are recomputed", path)
        with self._db() as db, db:
            db.execute("DELETE FROM rows WHERE shard = ?", (shard.id,))
            db.execute("DELETE FROM shards WHERE id = ?", (shard.id,))
        path.unlink(missing_ok=True)
        return False

    def open_shards(self, shard_ids: Sequence[int]) -> dict[int, tuple[np.ndarray, mmap.mmap]]:
        """Each shard's rows, memory-mapped read-only (with the map, to advise it)."""
        shards = self._shards()
        return {s: _map_npy(self.dir / shards[s].file) for s in shard_ids}

    def writer(self, view: str) -> ShardWriter:
        return ShardWriter(self, view)

    def commit(self, view: str, digests: Sequence[str], rows: np.ndarray) -> None:
        """Write ``rows`` (one per digest) as a new shard of ``view``, atomically: the file is
        complete on disk before one transaction makes its rows visible. A digest another
        process stored meanwhile keeps its first row."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        name = f"{view}/{uuid.uuid4().hex}.npy"
        path = self.dir / name
        try:
            atomic_write(path, lambda f: np.save(f, rows, allow_pickle=False))
            size, checksum = path.stat().st_size, _checksum(path)
            with self._db() as db, db:
                shard = db.execute(
                    "INSERT INTO shards (view, file, rows, width, bytes, checksum) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (view, name, len(rows), rows.shape[1], size, checksum),
                ).lastrowid
                db.executemany(
                    "INSERT OR IGNORE INTO rows (view, digest, shard, row) VALUES (?, ?, ?, ?)",
                    ((view, digest, shard, i) for i, digest in enumerate(digests)),
                )
        except (OSError, sqlite3.OperationalError) as error:
            path.unlink(missing_ok=True)
            if isinstance(error, sqlite3.OperationalError):
                error = OSError(errno.ENOSPC if "full" in str(error) else errno.EIO, str(error))
            raise _store_problem(path, error, "committing a shard of features") from error
        self._verified.add(shard)

    def remove_orphans(self) -> None:
        """Delete shard files no index row names (a commit killed between its rename and its
        transaction); call with the lock held, when no commit can be in flight."""
        with self._db() as db:
            known = {file for (file,) in db.execute("SELECT file FROM shards")}
        for path in self.dir.glob("*/*.npy"):
            if path.relative_to(self.dir).as_posix() not in known:
                path.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """Every file of the store (shards and index), for reports and tests."""
        return sorted(p for p in self.dir.rglob("*") if p.is_file())


def _checksum(path: Path) -> int:
    """CRC32 of a file, read in chunks (the file is not mapped, so it adds no resident memory)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _map_npy(path: Path) -> tuple[np.ndarray, mmap.mmap]:
    """The array of a ``.npy`` file memory-mapped read-only, and the map (numpy's own
    ``np.load(mmap_mode=...)`` hides the map, which we advise to drop pages)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    count = int(np.prod(shape))
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape), mapped


class ShardWriter:
    """Rows of one view collected until a shard is full, then committed to the store."""

    def __init__(self, store: FeatureStore, view: str) -> None:
        self.store, self.view = store, view
        self.digests: list[str] = []
        self.rows: list[np.ndarray] = []

    def add(self, digest: str, row: np.ndarray) -> None:
        self.digests.append(digest)
        self.rows.append(row.astype(self.store.dtype))
        limit = self.store.shard_rows or max(1, SHARD_BYTES // self.rows[0].nbytes)
        if len(self.rows) >= limit:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.store.commit(self.view, self.digests, np.stack(self.rows))
            self.digests, self.rows = [], []


class FeatureRows:
    """Rows of a store (one per item, possibly from many shards) served a batch at a time.

    Rows are gathered from memory-mapped shards; pages read are released from this
    process's memory every ``budget`` bytes, so resident memory stays flat. When all rows
    fit ``budget`` they are gathered once into memory instead.
    """

    def __init__(
        self, store: FeatureStore, shard_ids: np.ndarray, rows: np.ndarray, budget: int
    ) -> None:
        if (shard_ids < 0).any():
            raise ValueError("every item needs a stored row")
        self.shard_ids, self.rows = shard_ids, rows
        mapped = store.open_shards(np.unique(shard_ids).tolist())
        self.shards = {s: array for s, (array, _) in mapped.items()}
        self._maps = [m for _, m in mapped.values()]
        first = next(iter(self.shards.values()), None)
        self.width = 0 if first is None else first.shape[1]
        self.budget = budget
        self._touched = 0
        self.transform: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.memory: torch.Tensor | None = None
        if len(rows) * self.width * 4 <= budget:
            self.memory = self._gather(np.arange(len(rows)))
            self._release()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        indices = np.asarray(indices, dtype=np.int64)
        if self.memory is not None:
            out = self.memory[torch.from_numpy(indices)]
        else:
            out = self._gather(indices)
            self._touched += len(indices) * max(self.width * 4, mmap.PAGESIZE)
            if self._touched > self.budget:
                self._release()
        return out if self.transform is None else self.transform(out)

    def chunks(self) -> Iterator[torch.Tensor]:
        """Every row in order, a chunk at a time (an eighth of the budget each, at least
        ``MIN_CHUNK_ROWS`` rows): how fits that need all rows read them within the budget."""
        size = max(MIN_CHUNK_ROWS, self.budget // (8 * 4 * max(self.width, 1)))
        for start in range(0, len(self), size):
            yield self[np.arange(start, min(start + size, len(self)))]

    def transformed(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> FeatureRows:
        """The same rows passed through ``transform`` as they are read (e.g. standardised)."""
        view = copy.copy(self)
        view.transform = transform
        return view

    def _gather(self, indices: np.ndarray) -> torch.Tensor:
        out = np.empty((len(indices), self.width), dtype=np.float32)
        shard_ids, rows = self.shard_ids[indices], self.rows[indices]
        for shard in np.unique(shard_ids).tolist():
            where = shard_ids == shard
            out[where] = self.shards[shard][rows[where]]
        return torch.from_numpy(out)

    def _release(self) -> None:
        """Drop the mapped pages read so far from this process (they stay in the page cache)."""
        self._touched = 0
        for mapped in self._maps:
            mapped.madvise(mmap.MADV_DONTNEED)


Rows = torch.Tensor | FeatureRows  # a split's features: in memory, or read from the store


def row_chunks(x: Rows) -> Iterator[torch.Tensor]:
    """All rows of ``x`` in order: a tensor whole (in memory already), stored rows a chunk
    at a time."""
    if isinstance(x, torch.Tensor):
        yield x
    else:
        yield from x.chunks()
