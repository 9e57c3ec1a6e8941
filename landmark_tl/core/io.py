"""Atomic file writes: readers never see a half-written file."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status,
    read on each call as it is cheap and the umask may change); elsewhere found once by
    setting and restoring it (briefly visible to other threads, so done once and cached)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _umask_by_setting()


@functools.cache
def _umask_by_setting() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ReasonedOSError(OSError):
    """An OSError printed as its message alone: no ``[Errno 28]`` prefix, and no
    ``[Errno None]`` when it has no error number (the message names the file and the fix)."""

    def __str__(self) -> str:
        return self.strerror if self.strerror is not None else super().__str__()


def describe_os_error(error: OSError) -> str:
    """An OSError's reason for a message (``No space left on device``), never
    ``[Errno None] ...``; the file is left to the message, which names it."""
    if error.strerror:
        return error.strerror
    return str(error.args[0]) if error.args else type(error).__name__


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], durable: bool = True) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place. The
    file gets the mode ``open()`` would give a new file (0666 less the umask).

    ``durable`` also flushes the data to disk before the rename (slow on many small
    files; a cache whose entries carry a checksum can skip it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600, made what open() gives
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ReasonedOSError(
            err.errno, f"could not write {printable(str(path))}: {describe_os_error(err)}"
        ) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data), durable)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically; undecodable file-name bytes round-trip (surrogateescape)."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def printable(name: str) -> str:
    """A file name safe to print or log: undecodable bytes shown as U+FFFD."""
    return name.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def special_file_kind(mode: int) -> str | None:
    """The kind of a file that is neither regular nor a folder (``st_mode``), e.g. ``FIFO``;
    None for a regular file or a folder. Opening such a file may block forever."""
    return next((kind for test, kind in _SPECIAL_FILES if test(mode)), None)


def not_regular_reason(kind: str) -> str:
    """Why a special file is skipped, for problem reports."""
    return f"not a regular file ({kind}): skipped, never opened; replace it with a file"


def require_regular_file(path: str | Path) -> None:
    """Raise OSError for a path that is not a regular file (checked before opening it, so
    that a FIFO or a device is never opened: reading one may block forever), and for a
    path holding a NUL byte (which no file name can)."""
    if "\0" in os.fspath(path):
        raise OSError(errno.EINVAL, "the path holds a NUL byte, which no file name can", str(path))
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    kind = special_file_kind(mode)
    if kind is not None:
        raise OSError(errno.EINVAL, not_regular_reason(kind), str(path))


def not_a_file_reason(path: str | Path) -> str | None:
    """What ``path`` is when it is not a regular file (``file not found``, ``a folder, not a
    file``, ``a FIFO, not a regular file``, ...), found without opening it; None for a
    regular file."""
    if "\0" in os.fspath(path):
        return "a path with a NUL byte, which no file name can hold"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot be stat-ed ({describe_os_error(error)})"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    kind = special_file_kind(mode)
    return None if kind is None else f"a {kind}, not a regular file (never opened)"


def bytes_digest(data: bytes) -> str:
    """Content digest of bytes, the same as :func:`file_digest` of a file holding them."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str | Path) -> str:
    """Content digest of a file (BLAKE2b, 128 bit, hex)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(paths: Sequence[Path], workers: int | None = None) -> list[str]:
    """Content digests of many files, read in parallel."""
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(file_digest, paths))
