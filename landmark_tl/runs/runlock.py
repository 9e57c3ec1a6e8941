"""One process at a time in a run dir: ``run.lock``, held while a run writes there.

The lock is an advisory ``flock`` on ``<run dir>/run.lock``, which records the owner (pid,
host, start time) for the message another run gets. The kernel drops the lock when its
process ends, however it ends, so a lock file left by a killed run (kill -9, a lost node)
is stale by construction: the next run takes it over and says so. Written here rather
than with the ``filelock`` package because the message needs the owner written into the
locked file, which filelock's 3.x and 4.x lines (both allowed by torch) do differently.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from lightning.pytorch.utilities import rank_zero_only

from landmark_tl.core.io import printable
from landmark_tl.runs.fingerprint import RunDirError

log = logging.getLogger(__name__)
LOCK_FILE = "run.lock"
F = TypeVar("F", bound=Callable[..., Any])

# Locks this process holds, by (lock file, thread): a thread may take its own lock again
# (the command line takes it before train() does); another thread may not.
_HELD: dict[tuple[Path, int], int] = {}
_HELD_GUARD = threading.Lock()


class RunDirBusy(RunDirError):
    """Another process (or thread) is running in this run dir."""


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Own ``run_dir`` for the block (creating it); :class:`RunDirBusy` names the owner
    when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    key = ((run_dir / LOCK_FILE).resolve(), threading.get_ident())
    with _HELD_GUARD:
        taken_again = key in _HELD
        if taken_again:
            _HELD[key] += 1
    if taken_again:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    fd = _acquire(key[0], run_dir)
    with _HELD_GUARD:
        _HELD[key] = 1
    try:
        yield
    finally:
        with _HELD_GUARD:
            del _HELD[key]
        key[0].unlink(missing_ok=True)  # while still locked: no one holds the old file
        os.close(fd)


def _acquire(path: Path, run_dir: Path) -> int:
    """The descriptor of ``path``, locked, with this process written in as its owner."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise RunDirBusy(
                f"{printable(str(run_dir))} is in use by another run ({owner}; lock file "
                f"{LOCK_FILE}): wait for it to finish, or give this run another dir "
                "(hydra.run.dir=...)"
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the owner removed the file as we locked it: lock the new one
    earlier = _owner(fd)
    if earlier:
        log.warning(
            "run dir %s: taking over a stale lock (%s no longer holds it: killed?)",
            printable(str(run_dir)),
            earlier,
        )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _owner(fd: int) -> str:
    return printable(os.pread(fd, 200, 0).decode("utf-8", "replace").strip())


def holding_run_dir(train: F) -> F:
    """Decorate ``train(config, run_dir, ...)``: the first data-parallel rank (or the only
    process) holds the run dir's lock while it runs; other ranks share the dir it holds."""

    @functools.wraps(train)
    def run(config: Any, run_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        owned = run_dir_lock(Path(run_dir)) if rank_zero_only.rank == 0 else nullcontext()
        with owned:
            return train(config, run_dir, *args, **kwargs)

    return run  # type: ignore[return-value]
