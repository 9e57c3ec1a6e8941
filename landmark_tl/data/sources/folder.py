"""``data=folder``: an image tree ``<root>/<category>/<landmark>/<image>``.

The labels are the names of an image's two parent folders. Images at another depth become
problems; a tree that cannot be used at all (missing root, empty category or landmark
folder) raises :class:`CatalogError` naming the folder and the fix. Hidden entries and
non-image files are ignored and counted. Symbolic links are followed inside the root and
refused when they lead out of it (the policy of every source, :mod:`landmark_tl.data.sources`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from landmark_tl.core.io import not_regular_reason, special_file_kind
from landmark_tl.data.config import DataConfig
from landmark_tl.data.records import (
    IMAGE_EXTENSIONS,
    LAYOUT,
    WRONG_DEPTH,
    CatalogError,
    Problem,
    raise_all,
    show,
)
from landmark_tl.data.sources.base import Candidate, ImageSource, Listing
from landmark_tl.data.sources.registry import register_source


@dataclass
class FolderConfig(DataConfig):
    source: str = "folder"  # no keys of its own: data.root is the tree


@register_source(FolderConfig)
class FolderSource(ImageSource):
    """Images in ``<root>/<category>/<landmark>/``; keys are paths relative to the root."""

    name = "folder"

    def listing(self) -> Listing:
        _check_root(self.root)
        walk = Listing()
        errors: list[str] = []
        categories = _subfolders(self.root, walk)
        if not categories:
            raise CatalogError(_no_categories_message(self.root, walk))
        for category in categories:
            _walk_category(self.root, category, walk, errors)
        for link in walk.links:
            self.require_inside_root(link)
        raise_all(self.root, errors)
        return walk


def _check_root(root: Path) -> None:
    if not root.exists():
        raise CatalogError(
            f"{show(root)}: image folder does not exist; check the path "
            f"(expected a folder laid out as {LAYOUT})"
        )
    if not root.is_dir():
        raise CatalogError(
            f"{show(root)}: is a file, not a folder; give the folder laid out as {LAYOUT}"
        )


def _visible_entries(folder: Path, walk: Listing) -> list[os.DirEntry[str]]:
    """Entries of ``folder`` sorted by name, hidden ones counted and left out."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        raise CatalogError(
            f"{show(folder)}: cannot list the folder ({error.strerror}); "
            "fix its permissions or remove it"
        ) from error
    visible = [entry for entry in entries if not entry.name.startswith(".")]
    walk.ignored["hidden"] += len(entries) - len(visible)
    return visible


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry[str], walk: Listing) -> bool | None:
    """Whether ``entry`` is a folder (else a regular file); None (and a problem) when it
    cannot even be stat-ed (a symlink loop, a dangling link) or is a special file (FIFO,
    socket, device), which is never opened: reading a FIFO would block forever."""
    try:
        is_dir = entry.is_dir()
        if entry.is_symlink():  # followed; refused after the walk when it leads out
            walk.links.append(entry.path)
        if is_dir or entry.is_file():
            return is_dir
        kind = special_file_kind(entry.stat().st_mode)  # a dangling link raises here
    except OSError as error:
        reason = f"unreadable entry ({error.strerror}); fix or remove it"
        walk.problems.append(Problem(Path(entry.path), reason))
        return None
    walk.problems.append(Problem(Path(entry.path), not_regular_reason(kind or "unknown kind")))
    return None


def _subfolders(folder: Path, walk: Listing) -> list[str]:
    """Names of the visible subfolders of ``folder``; files there are at the wrong depth."""
    names = []
    for entry in _visible_entries(folder, walk):
        is_dir = _is_dir(entry, walk)
        if is_dir:
            names.append(entry.name)
        elif is_dir is not None:
            _misplaced(entry, walk)
    return names


def _misplaced(entry: os.DirEntry[str], walk: Listing) -> None:
    """An entry outside any landmark folder: a problem if it is an image, else ignored."""
    if entry.is_dir(follow_symlinks=False):
        for inner in _visible_entries(Path(entry.path), walk):
            _misplaced(inner, walk)
    elif _is_image(entry.name):
        walk.problems.append(Problem(Path(entry.path), WRONG_DEPTH))
    else:
        walk.ignored["non-image"] += 1


def _no_categories_message(root: Path, walk: Listing) -> str:
    found = f"; found {len(walk.problems)} image files directly in it" if walk.problems else ""
    return f"{show(root)}: contains no category folders{found}; arrange the images as {LAYOUT}"


def _walk_category(root: Path, category: str, walk: Listing, errors: list[str]) -> None:
    folder = root / category
    landmarks = _subfolders(folder, walk)
    if not landmarks:
        errors.append(
            f"{show(folder)}: category folder has no landmark folders; "
            f"put its images in {LAYOUT} or remove the folder"
        )
    for landmark in landmarks:
        _walk_landmark(root, category, landmark, walk, errors)


def _walk_landmark(
    root: Path, category: str, landmark: str, walk: Listing, errors: list[str]
) -> None:
    folder = root / category / landmark
    entries = _visible_entries(folder, walk)
    images = 0
    for entry in entries:
        is_dir = _is_dir(entry, walk)
        if is_dir is None:
            continue
        if is_dir:
            _misplaced(entry, walk)
        elif _is_image(entry.name):
            walk.candidates.append(
                Candidate(f"{category}/{landmark}/{entry.name}", category, landmark)
            )
            images += 1
        else:
            walk.ignored["non-image"] += 1
    if not images:
        errors.append(_no_images_message(folder, entries))


def _no_images_message(folder: Path, entries: Sequence[os.DirEntry[str]]) -> str:
    found = "it is empty" if not entries else f"only {len(entries)} other entries"
    return (
        f"{show(folder)}: landmark folder has no image files ({found}); add images "
        f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder"
    )
