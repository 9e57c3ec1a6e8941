"""What every data source is: where a data set's images are and what their labels are.

A source lists *candidates* — one per image, with a stable key (a POSIX path relative to
the source's root) and its two labels — plus what it had to skip, and reads an image's bytes
by its key. :func:`landmark_tl.data.catalog.build_catalog` turns any source into the one
:class:`~landmark_tl.data.catalog.Catalog` that everything downstream uses. The persistent
index of files (:mod:`landmark_tl.data.index`: size, mtime → digest) sits between the two:
it needs only the keys, :meth:`ImageSource.stamp` and :meth:`ImageSource.read`.

Each kind of source is one module beside this one that registers itself
(:mod:`landmark_tl.data.sources.registry`); ``data.source`` picks one.

Symbolic links, one policy for every source: a link is followed when its target lies
inside ``data.root`` (the root itself may be a link); a link that leads outside it is
refused (:meth:`ImageSource.require_inside_root`), naming the link and the fix, so that
a run never trains on files outside the data set it names.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from landmark_tl.core.io import require_regular_file
from landmark_tl.data.index import Stamp
from landmark_tl.data.records import CatalogError, DroppedLandmark, Problem, show

if TYPE_CHECKING:
    from landmark_tl.data.config import DataConfig


@dataclass(frozen=True, slots=True)
class Candidate:
    """An image a source lists, before it is read: its key under the root and its labels."""

    key: str
    category: str
    landmark: str


@dataclass(frozen=True)
class Columns:
    """Names of the CSV columns that hold an image's path (or id), landmark and category."""

    path: str = "path"
    landmark: str = "landmark"
    category: str = "category"


@dataclass
class Listing:
    """What a source lists: candidates, skipped files, dropped landmarks and remarks."""

    candidates: list[Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    dropped: list[DroppedLandmark] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    links: list[str] = field(default_factory=list)  # symbolic links followed while listing


class ImageSource(ABC):
    """A data set's images: :meth:`listing` names them and their labels, :meth:`read` reads."""

    name: ClassVar[str]
    # images that would decode (reduced as far as their format allows) to more pixels are
    # skipped and reported (``data.max_pixels``; None: no limit)
    max_pixels: int | None = None
    # whether data.root must be given (a source that makes its own images needs none)
    needs_root: ClassVar[bool] = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    @classmethod
    def from_config(cls, data: DataConfig, cache_dir: Path) -> Any:
        """The source of the ``data`` config (its registered config dataclass, with the
        source's own keys); ``cache_dir`` is where a source may keep what it generates.
        By default the source of ``data.root`` alone."""
        return cls(data.required_root())

    @abstractmethod
    def listing(self) -> Listing:
        """Every candidate image with its labels, and what was skipped while listing."""

    @functools.cached_property
    def real_root(self) -> Path:
        """The root with every symbolic link resolved: the bound links must stay inside."""
        return Path(os.path.realpath(self.root))

    def require_inside_root(self, path: str | Path, where: str = "") -> None:
        """Refuse (CatalogError) ``path`` when it leads outside the root through a
        symbolic link (the one symlink policy of every source; see the module doc).
        ``where`` names the line or entry that gave the path, for the message."""
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.real_root):
            raise CatalogError(
                f"{where or show(path)} leads outside data.root ({show(self.root)}) through a "
                f"symbolic link (to {show(real)}); links are followed only inside data.root: "
                "copy the file into the root, or remove the link"
            )

    def path(self, key: str) -> Path:
        """Where the image of ``key`` is shown to users (and stored, for file sources)."""
        return self.root / key

    def stamp(self, key: str) -> Stamp:
        """Size and modification time of the image at ``key`` (OSError when it is gone):
        while they are unchanged, the catalog index's row for it holds."""
        stat = os.stat(os.path.join(self.root, key))
        return Stamp(stat.st_size, stat.st_mtime_ns)

    def read(self, key: str) -> bytes:
        """The bytes of the image at ``key``, exactly as stored."""
        path = self.path(key)
        require_regular_file(path)  # a FIFO would block the read forever
        return path.read_bytes()

    def open(self, key: str) -> BinaryIO:
        """The image at ``key`` as a binary file to read (the caller closes it); OSError
        for anything but a regular file, which is never opened (a FIFO would block)."""
        path = self.path(key)
        require_regular_file(path)
        return open(path, "rb")  # noqa: SIM115
