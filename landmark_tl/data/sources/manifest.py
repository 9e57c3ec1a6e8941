"""``data=manifest``: a CSV file of image paths and labels, Kaggle style.

Columns (names set by ``data.columns.path/landmark/category``): the image path relative to
``data.root``, the landmark, and the category — or, instead of the category column, a
separate hierarchy CSV (``data.hierarchy``, columns landmark and category) mapping each
landmark to its category. Refused, naming the file and line: a path that is absolute or
leaves the root (``..``, a symlink out), a landmark given two categories, missing columns.
Skipped and reported: missing image files, rows listed twice, empty labels, landmarks the
hierarchy file does not know (dropped whole, never guessed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from landmark_tl.core.io import not_a_file_reason, printable
from landmark_tl.data.config import ColumnsConfig, DataConfig
from landmark_tl.data.records import CatalogError, DroppedLandmark, Problem, show
from landmark_tl.data.sources.base import Candidate, Columns, ImageSource, Listing
from landmark_tl.data.sources.registry import register_source
from landmark_tl.data.sources.table import read_columns

_SHOWN = 5


@dataclass
class ManifestConfig(DataConfig):
    source: str = "manifest"
    manifest: str = "manifest.csv"  # the CSV, relative to data.root or absolute
    hierarchy: str | None = None  # optional CSV of landmark -> category
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)


@register_source(ManifestConfig)
class ManifestSource(ImageSource):
    """Images listed in ``manifest`` (relative to ``root`` unless absolute) with their labels."""

    name = "manifest"

    def __init__(
        self,
        root: str | Path,
        manifest: str | Path = "manifest.csv",
        hierarchy: str | Path | None = None,
        columns: Columns | None = None,
    ) -> None:
        super().__init__(root)
        self.manifest = self.root / Path(manifest).expanduser()
        self.hierarchy = self.root / Path(hierarchy).expanduser() if hierarchy else None
        self.columns = columns or Columns()

    @classmethod
    def from_config(cls, data: ManifestConfig, cache_dir: Path) -> ManifestSource:
        columns = Columns(**asdict(data.columns))
        return cls(data.required_root(), data.manifest, data.hierarchy, columns)

    def listing(self) -> Listing:
        if not self.root.is_dir():
            raise CatalogError(f"{show(self.root)}: data.root is not a folder; check the path")
        listing = Listing()
        parents = self._hierarchy_file(listing)
        by_key: dict[str, list[tuple[int, str, str | None]]] = {}
        for line, key, landmark, category in self._rows(parents, listing):
            by_key.setdefault(key, []).append((line, landmark, category))
        unknown: Counter[str] = Counter()
        for key, rows in by_key.items():
            problem = _repeats(self.manifest.name, rows)
            if problem:
                listing.problems.append(Problem(self.path(key), problem))
                if len({(landmark, category) for _, landmark, category in rows}) > 1:
                    continue
            line, landmark, category = rows[0]
            if category is None:
                unknown[landmark] += 1
            elif why := not_a_file_reason(self.path(key)):
                fix = "add it" if why == "file not found" else "replace it with the image file"
                reason = f"{why} ({self.manifest.name} line {line}); {fix} or remove the row"
                listing.problems.append(Problem(self.path(key), reason))
            else:
                listing.candidates.append(Candidate(key, category, landmark))
        hierarchy_name = printable(self.hierarchy.name) if self.hierarchy else ""
        listing.dropped += [
            DroppedLandmark("", landmark, n, f"no row in the hierarchy file {hierarchy_name}")
            for landmark, n in sorted(unknown.items())
        ]
        _note_unused(listing, self.hierarchy, set(parents) - {lm for _, lm, _ in _all(by_key)})
        return listing

    def _hierarchy_file(self, listing: Listing) -> dict[str, str]:
        """Landmark → category from the hierarchy CSV (empty when there is none)."""
        if self.hierarchy is None:
            return {}
        columns = {
            self.columns.landmark: "data.columns.landmark",
            self.columns.category: "data.columns.category",
        }
        parents: dict[str, str] = {}
        lines: dict[str, int] = {}
        for line, row in read_columns(self.hierarchy, columns):
            landmark, category = row[self.columns.landmark], row[self.columns.category]
            if not landmark or not category:
                name = printable(self.hierarchy.name)
                listing.notes.append(f"{name} line {line}: empty landmark or category; ignored")
                continue
            if parents.setdefault(landmark, category) != category:
                raise CatalogError(
                    f"{show(self.hierarchy)}, line {line}: landmark {printable(landmark)!r} is "
                    f"given category {printable(category)!r}, but line {lines[landmark]} gives "
                    f"{printable(parents[landmark])!r}; a landmark has one category: fix one row"
                )
            lines.setdefault(landmark, line)
        return parents

    def _rows(
        self, parents: dict[str, str], listing: Listing
    ) -> list[tuple[int, str, str, str | None]]:
        """(line, key, landmark, category or None when unknown) of each manifest row."""
        c = self.columns
        columns = {
            c.path: "data.columns.path",
            c.landmark: "data.columns.landmark",
            c.category: "data.columns.category",
        }
        optional = (c.category,) if self.hierarchy is not None else ()
        rows = []
        categories: dict[str, tuple[str, int]] = {}
        for line, row in read_columns(self.manifest, columns, optional=optional):
            key = self._key(line, row[c.path])
            landmark = row[c.landmark]
            category = row.get(c.category) or parents.get(landmark)
            if not landmark or (self.hierarchy is None and not category):
                empty = "landmark" if not landmark else "category"
                reason = f"empty {empty} ({self.manifest.name} line {line}); fill it in"
                listing.problems.append(Problem(self.path(key), reason))
                continue
            if category is not None:
                self._check_one_category(line, landmark, category, parents, categories)
            rows.append((line, key, landmark, category))
        return rows

    def _check_one_category(
        self,
        line: int,
        landmark: str,
        category: str,
        parents: dict[str, str],
        categories: dict[str, tuple[str, int]],
    ) -> None:
        """Refuse a landmark given two categories (by two rows, or by a row and the hierarchy)."""
        if landmark in parents and parents[landmark] != category:
            raise CatalogError(
                f"{show(self.manifest)}, line {line}: landmark {printable(landmark)!r} has "
                f"category {printable(category)!r}, but the hierarchy file says "
                f"{printable(parents[landmark])!r}; a landmark has one category: fix one of them"
            )
        first, first_line = categories.setdefault(landmark, (category, line))
        if first != category:
            raise CatalogError(
                f"{show(self.manifest)}, line {line}: landmark {printable(landmark)!r} has "
                f"category {printable(category)!r}, but line {first_line} gives "
                f"{printable(first)!r}; a landmark has one category: fix one row"
            )

    def _key(self, line: int, value: str) -> str:
        """The image path of a row as a key under the root; refuses one that leaves it."""
        where = f"{show(self.manifest)}, line {line}"
        posix = PurePosixPath(value.replace("\\", "/"))
        if not value or posix.is_absolute() or ".." in posix.parts or value.startswith("~"):
            raise CatalogError(
                f"{where}: path {printable(value)!r} must be relative to data.root "
                f"({show(self.root)}) and stay inside it (no absolute path, no '..')"
            )
        key = posix.as_posix()
        if "\0" in key:
            raise CatalogError(
                f"{where}: path {printable(value)!r} holds a NUL byte, which no file name "
                "can; fix the row"
            )
        self.require_inside_root(self.path(key), f"{where}: path {printable(value)!r}")
        return key


def _all(
    by_key: dict[str, list[tuple[int, str, str | None]]],
) -> Iterator[tuple[int, str, str | None]]:
    return (row for rows in by_key.values() for row in rows)


def _repeats(manifest: str, rows: list[tuple[int, str, str | None]]) -> str | None:
    """Why rows naming the same image are a problem: a repeat, or two labels (ambiguous)."""
    if len(rows) == 1:
        return None
    lines = ", ".join(str(line) for line, *_ in rows)
    if len({(landmark, category) for _, landmark, category in rows}) == 1:
        return f"listed {len(rows)} times ({manifest} lines {lines}); the first row is used"
    labels = "; ".join(f"{printable(str(c))}/{printable(lm)}" for _, lm, c in rows)
    return (
        f"listed with different labels ({manifest} lines {lines}: {labels}): ambiguous, "
        "left out; remove the wrong rows"
    )


def _note_unused(listing: Listing, hierarchy: Path | None, unused: set[str]) -> None:
    if not unused or hierarchy is None:
        return
    shown = ", ".join(printable(lm) for lm in sorted(unused)[:_SHOWN])
    listing.notes.append(
        f"{printable(hierarchy.name)} lists {len(unused)} landmarks with no image in the "
        f"manifest (e.g. {shown}); they are ignored"
    )
