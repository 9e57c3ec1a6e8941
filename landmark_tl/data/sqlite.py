"""SQLite connections shared by the catalog index and the feature store.

WAL journal (readers never block the one writer; joblib workers and data-parallel ranks
share a file), a long busy timeout (a writer waits for another instead of failing), and
an optional integrity check when a process first opens a file, so that a damaged index is
detected and rebuilt rather than used.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path, *, schema: str, check: bool) -> sqlite3.Connection:
    """A connection to ``path`` with ``schema`` in place; ``check`` also runs SQLite's
    ``quick_check`` (DatabaseError when the file is damaged). ``with db:`` is one
    transaction. A new file gets the mode ``open()`` would give (0666 less the umask), and
    SQLite gives its WAL files the same, so a group can share a cache."""
    path.touch(mode=0o666)
    db = sqlite3.connect(path, timeout=600, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 600000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        if check and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("integrity check failed")
        db.executescript(schema)
        db.isolation_level = "DEFERRED"
    except BaseException:
        db.close()
        raise
    return db


# SQLite's codes for a file that is not a sound database; any other error (disk full,
# read-only, I/O, busy) says nothing about the file and must not get it discarded
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def damaged(error: sqlite3.DatabaseError) -> bool:
    """Whether ``error`` says the database file is damaged (so it may be discarded and
    rebuilt), rather than that it cannot be written or read now (disk full, read-only)."""
    name = getattr(error, "sqlite_errorname", None)
    if name is None:  # raised here (a failed quick_check), not by SQLite
        return True
    return name.startswith(_DAMAGE)
