"""What a catalog is made of: image records, skipped files, dropped landmarks,
the errors, and the names every data source shares (image extensions, the layout)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import printable

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif"}
)

LAYOUT = "<root>/<category>/<landmark>/<image>"

WRONG_DEPTH = f"not inside <category>/<landmark>/: images must be at {LAYOUT}; move it there"

_MAX_LISTED = 10


class CatalogError(UserError, ValueError):
    """The image tree cannot be used; the message names the folder or file and the fix."""


@dataclass(frozen=True, slots=True)  # many: no per-object dict
class ImageRecord:
    """One readable image (its path, under the catalog's root) and its two labels."""

    path: Path
    category: str
    landmark: str


@dataclass(frozen=True, slots=True)  # many: no per-object dict
class Problem:
    """A skipped file and why it was skipped."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DroppedLandmark:
    """A whole landmark left out, with how many images it had and why."""

    category: str
    landmark: str
    images: int
    reason: str


class NamedBytes(io.BytesIO):
    """Image bytes in memory that show as their file name in Pillow's error messages."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:
        return repr(printable(os.path.basename(self.name)))


def show(path: str | Path) -> str:
    """A path as printed in messages (undecodable bytes made printable)."""
    return printable(str(path))


def raise_all(root: Path, errors: Sequence[str]) -> None:
    """Raise one CatalogError listing every unusable folder (up to a limit)."""
    if not errors:
        return
    if len(errors) == 1:
        raise CatalogError(errors[0])
    listed = "\n  ".join(errors[:_MAX_LISTED])
    more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
    raise CatalogError(f"{show(root)}: {len(errors)} folders are unusable:\n  {listed}{more}")
