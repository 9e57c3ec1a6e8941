"""Scan an image tree ``<root>/<category>/<landmark>/<image>`` into a :class:`Catalog`.

Every image file ends up accounted for: it becomes a record, or a :class:`Problem` with a
one-line reason (unreadable, truncated, at the wrong depth, unsupported format). A tree that
cannot be used at all (missing root, empty category or landmark folder) raises
:class:`CatalogError` naming the folder and the fix. Hidden entries and non-image files are
ignored and counted in the log.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, features

from landmark_tl.errors import UserError
from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.io import (
    atomic_write_text,
    file_digests,
    not_regular_reason,
    printable,
    require_regular_file,
    special_file_kind,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif"}
)
LAYOUT = "<root>/<category>/<landmark>/<image>"
WRONG_DEPTH = f"not inside <category>/<landmark>/: images must be at {LAYOUT}; move it there"
AVIF_HINT = (
    "AVIF is not supported by this Pillow; install a Pillow built with AVIF "
    "(features.check('avif') is True) or `pip install pillow-avif-plugin`"
)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_MAX_LISTED = 10


class CatalogError(UserError, ValueError):
    """The image tree cannot be used; the message names the folder or file and the fix."""


@dataclass(frozen=True)
class ImageRecord:
    """One readable image and its two labels (the names of its parent folders)."""

    path: Path
    category: str
    landmark: str


@dataclass(frozen=True)
class Problem:
    """A skipped file and why it was skipped."""

    path: Path
    reason: str


@dataclass
class Catalog:
    """The readable images of a tree, their label hierarchy and the files that were skipped."""

    root: Path
    records: list[ImageRecord]
    hierarchy: LabelHierarchy
    problems: list[Problem] = field(default_factory=list)
    digests: dict[Path, str] = field(default_factory=dict)  # content digest by path

    def content_digests(self) -> list[str]:
        """Content digest of each record (read once by the scan, computed here if not)."""
        missing = [r.path for r in self.records if r.path not in self.digests]
        self.digests.update(zip(missing, file_digests(missing), strict=True))
        return [self.digests[r.path] for r in self.records]

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


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully and upright (EXIF orientation applied) as 8-bit RGB.

    Transparent pixels are composited on white; 16-bit, 32-bit and float images are scaled
    to 8 bits. Raises whatever Pillow raises for unreadable or truncated files, and OSError
    for a path that is not a regular file (never opened).
    """
    require_regular_file(path)  # a FIFO would block the open forever
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)  # a fully decoded copy
    return _to_rgb(upright)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _on_white(image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def _deep_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float grey image to 8 bits.

    ``I;16`` uses the full 16-bit range; ``I`` and ``F`` are read as 8-bit when their values
    fit, as 16-bit when they fit that, and are scaled by their maximum otherwise.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if image.mode.startswith("I;16"):
        peak = 65535.0
    else:
        top = float(values.max(initial=0.0))
        peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
    return Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).round().astype(np.uint8))


def _on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def avif_supported() -> bool:
    """Whether Pillow can decode AVIF here (built in, or through ``pillow-avif-plugin``)."""
    if "avif" in features.modules and features.check_module("avif"):
        return True
    try:
        import pillow_avif  # noqa: F401  (importing registers the plugin with Pillow)
    except ImportError:
        return False
    return True


def scan_image_folder(
    root: str | Path, *, verify: bool = True, workers: int | None = None
) -> Catalog:
    """Scan ``<root>/<category>/<landmark>/<image>`` into a :class:`Catalog`.

    With ``verify`` every image is decoded (in ``workers`` threads, default: one per CPU) and
    unreadable ones become problems; without it only the file names are checked.
    """
    root = Path(root).expanduser().absolute()
    _check_root(root)
    walk = _walk_tree(root)
    reasons = _unusable_reasons(walk.candidates, verify=verify, workers=workers)
    checked = list(zip(walk.candidates, reasons, strict=True))
    records = [record for record, reason in checked if reason is None]
    failed = [(record, reason) for record, reason in checked if reason is not None]
    digests = dict(
        zip((r.path for r in records), file_digests([r.path for r in records]), strict=True)
    )
    records, duplicates = _without_duplicates(records, digests)
    failed += duplicates
    _check_readable(root, records, failed)
    records.sort(key=lambda r: (r.category, r.landmark, r.path.name))
    problems = walk.problems + [Problem(record.path, reason) for record, reason in failed]
    problems.sort(key=lambda p: str(p.path))
    hierarchy = LabelHierarchy.from_pairs((r.category, r.landmark) for r in records)
    _log_summary(root, records, hierarchy, problems, walk.ignored)
    return Catalog(root, records, hierarchy, problems, {r.path: digests[r.path] for r in records})


def _show(path: str | Path) -> str:
    return printable(str(path))


def _check_root(root: Path) -> None:
    if not root.exists():
        raise CatalogError(
            f"{_show(root)}: image folder does not exist; check the path "
            f"(expected a folder laid out as {LAYOUT})"
        )
    if not root.is_dir():
        raise CatalogError(
            f"{_show(root)}: is a file, not a folder; give the folder laid out as {LAYOUT}"
        )


@dataclass
class _Walk:
    """What a walk over the tree found, before any image is decoded."""

    candidates: list[ImageRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)


def _walk_tree(root: Path) -> _Walk:
    walk = _Walk()
    categories = _subfolders(root, walk)
    if not categories:
        raise CatalogError(_no_categories_message(root, walk))
    for category in categories:
        _walk_category(root / category, walk)
    _raise_all(root, walk.errors)
    return walk


def _visible_entries(folder: Path, walk: _Walk) -> list[os.DirEntry[str]]:
    """Entries of ``folder`` sorted by name, hidden ones counted and left out."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        raise CatalogError(
            f"{_show(folder)}: cannot list the folder ({error.strerror}); "
            "fix its permissions or remove it"
        ) from error
    visible = [entry for entry in entries if not entry.name.startswith(".")]
    walk.ignored["hidden"] += len(entries) - len(visible)
    return visible


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry[str], walk: _Walk) -> bool | None:
    """Whether ``entry`` is a folder (else a regular file); None (and a problem) when it
    cannot even be stat-ed (a symlink loop, a dangling link) or is a special file (FIFO,
    socket, device), which is never opened: reading a FIFO would block forever."""
    try:
        is_dir = entry.is_dir()
        if is_dir or entry.is_file():
            return is_dir
        kind = special_file_kind(entry.stat().st_mode)  # a dangling link raises here
    except OSError as error:
        reason = f"unreadable entry ({error.strerror}); fix or remove it"
        walk.problems.append(Problem(Path(entry.path), reason))
        return None
    walk.problems.append(Problem(Path(entry.path), not_regular_reason(kind or "unknown kind")))
    return None


def _subfolders(folder: Path, walk: _Walk) -> list[str]:
    """Names of the visible subfolders of ``folder``; files there are at the wrong depth."""
    names = []
    for entry in _visible_entries(folder, walk):
        is_dir = _is_dir(entry, walk)
        if is_dir:
            names.append(entry.name)
        elif is_dir is not None:
            _misplaced(entry, walk)
    return names


def _misplaced(entry: os.DirEntry[str], walk: _Walk) -> None:
    """An entry outside any landmark folder: a problem if it is an image, else ignored."""
    if entry.is_dir(follow_symlinks=False):
        for inner in _visible_entries(Path(entry.path), walk):
            _misplaced(inner, walk)
    elif _is_image(entry.name):
        walk.problems.append(Problem(Path(entry.path), WRONG_DEPTH))
    else:
        walk.ignored["non-image"] += 1


def _no_categories_message(root: Path, walk: _Walk) -> str:
    found = f"; found {len(walk.problems)} image files directly in it" if walk.problems else ""
    return f"{_show(root)}: contains no category folders{found}; arrange the images as {LAYOUT}"


def _walk_category(folder: Path, walk: _Walk) -> None:
    landmarks = _subfolders(folder, walk)
    if not landmarks:
        walk.errors.append(
            f"{_show(folder)}: category folder has no landmark folders; "
            f"put its images in {LAYOUT} or remove the folder"
        )
    for landmark in landmarks:
        _walk_landmark(folder, landmark, walk)


def _walk_landmark(category_folder: Path, landmark: str, walk: _Walk) -> None:
    folder = category_folder / landmark
    entries = _visible_entries(folder, walk)
    images = 0
    for entry in entries:
        is_dir = _is_dir(entry, walk)
        if is_dir is None:
            continue
        if is_dir:
            _misplaced(entry, walk)
        elif _is_image(entry.name):
            walk.candidates.append(ImageRecord(Path(entry.path), category_folder.name, landmark))
            images += 1
        else:
            walk.ignored["non-image"] += 1
    if not images:
        found = "it is empty" if not entries else f"only {len(entries)} other entries"
        walk.errors.append(
            f"{_show(folder)}: landmark folder has no image files ({found}); add images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder"
        )


def _raise_all(root: Path, errors: Sequence[str]) -> None:
    """Raise one CatalogError listing every unusable folder (up to a limit)."""
    if not errors:
        return
    if len(errors) == 1:
        raise CatalogError(errors[0])
    listed = "\n  ".join(errors[:_MAX_LISTED])
    more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
    raise CatalogError(f"{_show(root)}: {len(errors)} folders are unusable:\n  {listed}{more}")


def _unusable_reasons(
    candidates: Sequence[ImageRecord], *, verify: bool, workers: int | None
) -> list[str | None]:
    """Why each candidate cannot be used (None when it can), in the candidates' order."""
    check = partial(_unusable_reason, avif=avif_supported(), verify=verify)
    paths = [record.path for record in candidates]
    if not verify:
        return [check(path) for path in paths]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with _strict_decoding(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(check, paths))


def _unusable_reason(path: Path, *, avif: bool, verify: bool) -> str | None:
    if not avif and path.suffix.lower() == ".avif":
        return AVIF_HINT
    if not verify:
        return None
    try:
        load_rgb(path)
    except Exception as error:  # any decoder failure makes this file unusable, not the scan
        return f"unreadable: {type(error).__name__}: {_one_line(str(error))}"
    return None


def _one_line(text: str) -> str:
    return printable(" ".join(text.split()))


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on truncated files (another library may have relaxed that)."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _without_duplicates(
    records: Sequence[ImageRecord], digests: dict[Path, str]
) -> tuple[list[ImageRecord], list[tuple[ImageRecord, str]]]:
    """Drop byte-identical copies: under two landmarks the label is ambiguous, so every copy
    goes; within one landmark the first stays, so a copy cannot sit in train and test."""
    labels: dict[str, set[tuple[str, str]]] = {}
    for record in records:
        labels.setdefault(digests[record.path], set()).add((record.category, record.landmark))
    kept: list[ImageRecord] = []
    dropped: list[tuple[ImageRecord, str]] = []
    first: dict[str, ImageRecord] = {}
    for record in records:
        digest = digests[record.path]
        if len(labels[digest]) > 1:
            others = sorted("/".join(map(printable, p)) for p in labels[digest])
            reason = f"same bytes under several landmarks ({', '.join(others)}): ambiguous label"
            dropped.append((record, reason))
        elif digest in first:
            reason = f"duplicate of {printable(first[digest].path.name)} in the same landmark"
            dropped.append((record, reason))
        else:
            first[digest] = record
            kept.append(record)
    return kept, dropped


def _check_readable(
    root: Path, records: Sequence[ImageRecord], failed: Sequence[tuple[ImageRecord, str]]
) -> None:
    """Refuse a tree with no readable image, or a landmark whose images all failed."""
    if not records:
        record, reason = failed[0]
        raise CatalogError(
            f"{_show(root)}: no readable images: all {len(failed)} image files failed "
            f"(first: {_show(record.path)}: {reason}); replace or remove the broken files"
        )
    readable = {(r.category, r.landmark) for r in records}
    counts: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], tuple[ImageRecord, str]] = {}
    for record, reason in failed:
        pair = (record.category, record.landmark)
        counts[pair] += 1
        first.setdefault(pair, (record, reason))
    _raise_all(
        root,
        [
            f"{_show(root.joinpath(*pair))}: landmark folder has no readable images: all "
            f"{counts[pair]} image files are unreadable (e.g. {_show(record.path.name)}: "
            f"{reason}); replace them or remove the folder"
            for pair, (record, reason) in first.items()
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
        _show(root),
        len(records),
        hierarchy.num_categories,
        hierarchy.num_landmarks,
        ignored["hidden"],
        ignored["non-image"],
    )
    if problems:
        first = ", ".join(_show(p.path) for p in problems[:3])
        log.warning(
            "%s: skipped %d image files (first: %s); see Catalog.problems or write_problem_report",
            _show(root),
            len(problems),
            first,
        )
