"""Features of a frozen backbone, computed once per image and view, kept in a sharded store.

A row is keyed by everything that changes it: the encoder (backbone name, weights digest,
preprocessing, precision of the pass), the view (name and parameters) and the content
digest of the image bytes that were encoded. The store lives outside any run dir
(``paths.cache_dir/features/<encoder>/<dtype>/``): per view, shards of rows (``.npy``,
memory-mapped when read), and ``index.sqlite`` mapping (view, digest) → (shard, row) with
each shard's checksum. A shard is written to a temporary file, flushed and renamed into
place before the one transaction that makes its rows visible, so a killed or failing
write leaves the store as it was; a damaged shard or index is detected, discarded and
recomputed, never used.

The feature pass (:func:`fill_store`) streams images through DataLoader workers a batch at
a time: each worker reads an image's bytes, hashes them and decodes them, so an entry is
keyed by the bytes it was computed from even if the file changes meanwhile. This is the
one full decode of a cold run (the catalog only reads headers): an image that fails it is
reported, and the run goes on without it. Rows are
committed a shard at a time as they come, so memory stays bounded and a killed pass
continues where it stopped. Reading (:class:`FeatureRows`) gathers a batch of rows from the
memory-mapped shards; it loads everything into memory only when that fits a budget.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import logging
import mmap
import sqlite3
import sys
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import (
    ReasonedOSError,
    atomic_write,
    bytes_digest,
    describe_os_error,
    printable,
)
from landmark_tl.data.sqlite import connect, damaged
from landmark_tl.data.transforms import Preprocessing, View


class Encoder(Protocol):
    """What the feature pass needs of a model (``models.backbone.Backbone`` is one): a
    module mapping an image batch at ``preprocessing``'s geometry to ``num_features`` wide
    features, named by ``name`` and ``weights_digest`` in the store's key."""

    name: str
    preprocessing: Preprocessing
    num_features: int
    training: bool

    @property
    def weights_digest(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> Encoder: ...

    def train(self, mode: bool = True) -> Encoder: ...

    def to(self, device: torch.device | str) -> Encoder: ...


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


_DECODING = "jpeg-draft"  # ImageDecoder's way of decoding: features made otherwise differ


def encoder_key(backbone: Encoder, autocast: torch.dtype | None = None) -> str:
    """Digest of what makes a backbone's features: name, weights, preprocessing, how images
    are decoded (JPEGs reduced to the resize size) and the precision of the pass."""
    parts = (
        backbone.name,
        backbone.weights_digest,
        repr(backbone.preprocessing),
        _DECODING,
        str(autocast),
    )
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


class FeatureStoreError(UserError, ReasonedOSError):
    """The feature store cannot be read or written; the message names the path and the fix."""


class FeaturePassError(UserError, RuntimeError):
    """The feature pass's loader workers died or sent nothing within ``data.timeout_s``."""


def loader_failure(error: RuntimeError, timeout: float) -> FeaturePassError:
    """A DataLoader's worker crash or timeout (torch's RuntimeError) as a message that says
    the reason and the fix."""
    return FeaturePassError(
        f"the feature pass stopped: {' '.join(str(error).split())}. Its loader workers "
        f"died or sent no batch within data.timeout_s={timeout:g} s: a worker killed for "
        "memory, shared memory (/dev/shm) exhausted (in a container: --shm-size), or a read "
        "that hangs. Lower data.num_workers (0 decodes in this process) or "
        "features.batch_size, or free memory, and run again (computed features are kept)"
    )


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


# ---- the feature pass ------------------------------------------------------------------


@dataclass
class PassResult:
    """What a feature pass did: rows computed, and the images it could not use (index →
    reason: unreadable now, or changed since the catalog read them). Of the images whose
    bytes are the ones the catalog read (same digest), ``decoded`` lists those that decoded
    and ``broken`` those that fail to (index → the decoder's error): they stay unusable
    until the file changes."""

    computed: int = 0
    images: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    broken: dict[int, str] = field(default_factory=dict)
    decoded: array = field(default_factory=lambda: array("q"))  # 8 bytes an image


class _PassImages(Dataset):
    """Item k: image ``todo[k]`` read, hashed (the digest of exactly these bytes), decoded,
    and its ``views`` made; runs in loader workers."""

    def __init__(
        self,
        todo: Sequence[int],
        read: Callable[[int], bytes],
        decode: Callable[[bytes, int], torch.Tensor],
        views: Sequence[View],
    ) -> None:
        self.todo, self.read, self.decode, self.views = todo, read, decode, views

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int) -> tuple[int, str | None, torch.Tensor | str]:
        """(image index, digest of the bytes read (None: unreadable), its views or why it
        failed)."""
        i, digest = self.todo[k], None
        try:
            data = self.read(i)
            digest = bytes_digest(data)
            image = self.decode(data, i)
        except Exception as error:  # reported for this image; the pass goes on
            return i, digest, f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        return i, digest, torch.stack([view(image) for view in self.views])


def _collate(
    batch: list[tuple[int, str | None, torch.Tensor | str]],
) -> tuple[list[tuple[int, str]], torch.Tensor | None, list[tuple[int, str | None, str]]]:
    """(image index, digest) of the decoded images, their views as one tensor (one transfer
    from the worker), and (index, digest read, why) of each other image."""
    ready = [(i, digest) for i, digest, x in batch if not isinstance(x, str)]
    views = [x for _, _, x in batch if not isinstance(x, str)]
    failed = [(i, digest, x) for i, digest, x in batch if isinstance(x, str)]
    return ready, torch.cat(views) if views else None, failed


def pass_batch_size(device: torch.device | str, input_size: Sequence[int]) -> int:
    """Images per forward of the feature pass when ``features.batch_size`` is not set: 64
    on an accelerator. On a CPU as many as keep the activations in the caches, about 8
    images of 224 x 224 px (measured 1.2-2.3x the images/s of 64 across timm models at
    224 px on 2 cores), more of smaller ones (the same pixels), at most 64."""
    if torch.device(device).type != "cpu":
        return 64
    pixels = input_size[-1] * input_size[-2]
    return max(1, min(64, round(8 * 224 * 224 / pixels)))


def _default_batch(device: torch.device | str, backbone: Encoder) -> int:
    return pass_batch_size(device, backbone.preprocessing.input_size)


def fill_store(
    store: FeatureStore,
    backbone: Encoder,
    digests: Sequence[str],
    wanted: Mapping[str, Sequence[int]],
    views: Mapping[str, View],
    read: Callable[[int], bytes],
    decode: Callable[[bytes, int], torch.Tensor],
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    timeout: float = 0,
) -> PassResult:
    """Compute the rows the store lacks: for each view name, the images ``wanted[view]``
    (indices into ``digests``). ``read(i)`` gives image i's bytes and ``decode(data, i)``
    its uint8 (3, H, W) tensor (in ``num_workers`` loader workers). One process computes
    while others wait for the lock and then find the rows there. A worker that dies, or
    workers that send no batch within ``timeout`` seconds (0: no limit), stop the pass with
    :class:`FeaturePassError` (the rows computed before are kept).

    Under data-parallel training (``torch.distributed`` initialised, world > 1) the ranks
    split the pass: rank 0 holds the lock for them all, each rank encodes every
    world-th missing image and commits its own shards; when all are done every rank sees
    every row, and the result (every rank's failures) is the same on each."""
    result = PassResult()
    rank, world = _rank_and_world()
    if world == 1 and not _missing(store, digests, wanted):
        return result
    with store.lock() if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            store.remove_orphans()
        _barrier(world)  # the store is settled: every rank finds the same rows missing
        groups = _missing(store, digests, wanted)
        start = time.perf_counter()
        for names, todo in groups.items():
            _run_pass(
                store,
                backbone,
                digests,
                names,
                _PassImages(todo[rank::world], read, decode, [views[n] for n in names]),
                result,
                batch_size=max(1, (batch_size or _default_batch(device, backbone)) // len(names)),
                num_workers=num_workers,
                device=device,
                autocast=autocast,
                timeout=timeout,
            )
        log.info(
            "computed %d features (%d images) in %.1f s%s",
            result.computed,
            result.images,
            time.perf_counter() - start,
            f" (rank {rank} of {world})" if world > 1 else "",
        )
        _barrier(world)  # every rank's rows are committed
    return _gathered(result, world)


def _rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this data-parallel process; (0, 1) when there is none."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _gathered(result: PassResult, world: int) -> PassResult:
    """Every rank's failures and counts merged into ``result`` (its ``decoded`` stays this
    rank's own: each rank records what it decoded), so every rank leaves out the same
    images."""
    if world == 1:
        return result
    parts: list = [None] * world
    own = (result.computed, result.images, result.failed, result.broken)
    torch.distributed.all_gather_object(parts, own)
    result.computed = sum(p[0] for p in parts)
    result.images = sum(p[1] for p in parts)
    for _, _, failed, broken in parts:
        result.failed.update(failed)
        result.broken.update(broken)
    return result


def _missing(
    store: FeatureStore, digests: Sequence[str], wanted: Mapping[str, Sequence[int]]
) -> dict[tuple[str, ...], list[int]]:
    """The images that lack rows, grouped by the view names they lack (names → ascending
    image indices); one flag per image and view, not an object per image."""
    names = list(wanted)
    lacks = np.zeros((len(digests), len(names)), dtype=bool)
    for v, (view, indices) in enumerate(wanted.items()):
        indices = np.asarray(indices, dtype=np.int64)
        shard_ids, _ = store.locate(view, [digests[i] for i in indices])
        lacks[indices[shard_ids < 0], v] = True
    images = np.flatnonzero(lacks.any(axis=1))
    patterns, group = np.unique(lacks[images], axis=0, return_inverse=True)
    return {
        tuple(n for n, lack in zip(names, pattern, strict=True) if lack): images[
            group.reshape(-1) == g
        ].tolist()
        for g, pattern in enumerate(patterns)
    }


@torch.inference_mode()
def _run_pass(
    store: FeatureStore,
    backbone: Encoder,
    digests: Sequence[str],
    names: Sequence[str],
    images: _PassImages,
    result: PassResult,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device | str,
    autocast: torch.dtype | None,
    timeout: float,
) -> None:
    was_training = backbone.training
    backbone.eval().to(device)
    loader = DataLoader(
        images,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        timeout=timeout if num_workers else 0,  # torch takes a timeout only with workers
    )
    writers = {name: store.writer(name) for name in names}
    device_type = torch.device(device).type
    batches = tqdm(
        loader, desc="features", unit="batch", disable=not sys.stderr.isatty(), leave=False
    )
    threads = _PassThreads(num_workers if device_type == "cpu" else 0)
    with (
        threads,
        torch.autocast(device_type, dtype=autocast or torch.float32, enabled=bool(autocast)),
    ):
        for ready, x, failed in _worker_failures(threads.timed(batches), timeout):
            for i, digest, why in failed:
                result.failed[i] = f"unreadable now ({why})"
                if digest == digests[i]:  # the bytes the catalog read: broken for good
                    result.broken[i] = why
            if not ready:
                continue
            x = x.to(device, non_blocking=True)
            features = backbone(x).float().cpu().numpy().reshape(len(ready), len(names), -1)
            for (i, digest), rows in zip(ready, features, strict=True):
                for name, row in zip(names, rows, strict=True):
                    writers[name].add(digest, row)  # keyed by the bytes that were encoded
                if digest != digests[i]:
                    result.failed[i] = "changed since the catalog read it"
                else:
                    result.decoded.append(i)
            result.computed += len(ready) * len(names)
            result.images += len(ready)
    for writer in writers.values():
        writer.flush()
    backbone.train(was_training)


def _worker_failures(batches: Iterator[Any], timeout: float) -> Iterator[Any]:
    """``batches``, with a loader worker's death or a timeout raised as
    :class:`FeaturePassError` (torch raises a RuntimeError naming the pid and signal)."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as error:
            if "DataLoader" not in str(error):
                raise
            raise loader_failure(error, timeout) from error
        yield batch


class _PassThreads:
    """The CPU forward pass's torch threads beside ``workers`` decoding loader workers.

    It starts on the cores the workers leave (at least one): beside busy workers a forward
    on every core runs slower, its threads waiting on each other (a small model on large
    JPEGs: 243 against 165 images/s on 2 cores). After ``probe`` batches, when the forward
    rarely waits for the workers (they keep up, so they are mostly idle), it takes every
    core: a real backbone at 224 px is forward-bound (33 against 21 images/s). Own code:
    neither torch's DataLoader nor timm adapts threads to the loader.
    """

    def __init__(
        self,
        workers: int,
        probe: int = 8,
        idle: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.workers, self.probe, self.idle, self.clock = workers, probe, idle, clock
        self.before = torch.get_num_threads()
        self.waited = self.busy = 0.0

    def __enter__(self) -> _PassThreads:
        if self.workers:
            torch.set_num_threads(max(1, self.before - self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches``, timing the wait for each against the work on it."""
        iterator, count = iter(batches), 0
        while True:
            start = self.clock()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            got = self.clock()
            yield batch
            count += 1
            if count == 1:  # the first wait is the workers' start
                continue
            self.waited += got - start
            self.busy += self.clock() - got
            if count == 1 + self.probe and self.workers and self.waited < self.idle * self.busy:
                torch.set_num_threads(self.before)


@torch.inference_mode()
def extract_features(
    backbone: Encoder,
    images: Dataset,
    *,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Run ``backbone`` (in eval mode, on ``device``, under ``autocast`` if given) over a
    dataset of image tensors (the bare forward, as benchmarks measure it); ``batch_size``
    as the feature pass's (None: :func:`pass_batch_size`)."""
    was_training = backbone.training
    backbone.eval().to(device)
    batch_size = batch_size or _default_batch(device, backbone)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=bool(autocast)):
        feats = [backbone(x.to(device, non_blocking=True)).float().cpu() for x in loader]
    backbone.train(was_training)
    return torch.cat(feats) if feats else torch.empty(0, backbone.num_features)
