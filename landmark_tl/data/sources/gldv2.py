"""``data=gldv2``: Google Landmarks v2 as downloaded, its own files unchanged.

- ``train.csv`` (``id,url,landmark_id``): one row per training image;
- ``train_clean.csv`` (``landmark_id,images``, ids separated by spaces), optional: with
  ``clean`` only the images it lists are kept;
- ``train_label_to_hierarchical.csv`` (``landmark_id,category,supercategory,...``): the
  category of each landmark is its ``category_column`` (default ``supercategory``);
- images at ``<root>/train/<a>/<b>/<c>/<id>.jpg``, ``a b c`` the first characters of the id.

Images not downloaded are reported and skipped; landmarks without a hierarchy row (or with
an empty category) are reported and dropped whole, never guessed.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from landmark_tl.core.io import printable
from landmark_tl.data.config import ColumnsConfig, DataConfig
from landmark_tl.data.records import CatalogError, DroppedLandmark, Problem, show
from landmark_tl.data.sources.base import Candidate, Columns, ImageSource, Listing
from landmark_tl.data.sources.registry import register_source
from landmark_tl.data.sources.table import read_columns

TRAIN = "train.csv"
CLEAN = "train_clean.csv"
HIERARCHY = "train_label_to_hierarchical.csv"
DEFAULT_COLUMNS = Columns(path="id", landmark="landmark_id", category="supercategory")


def image_key(image_id: str) -> str:
    """Where GLDv2 stores an image, relative to the root: ``train/a/b/c/<id>.jpg``."""
    return f"train/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


@dataclass
class GLDv2Config(DataConfig):
    source: str = "gldv2"
    clean: bool = True  # keep only the images train_clean.csv lists (when the file is there)
    # train.csv's id and landmark columns; category: the hierarchy file's column used as
    # category (supercategory, or e.g. natural_or_human_made)
    columns: ColumnsConfig = field(default_factory=lambda: ColumnsConfig(**asdict(DEFAULT_COLUMNS)))


@register_source(GLDv2Config)
class GLDv2Source(ImageSource):
    """The GLDv2 training set in ``root`` (its CSV files beside its ``train/`` folder)."""

    name = "gldv2"

    def __init__(
        self, root: str | Path, *, clean: bool = True, columns: Columns | None = None
    ) -> None:
        super().__init__(root)
        self.clean = clean
        self.columns = columns or DEFAULT_COLUMNS

    @classmethod
    def from_config(cls, data: GLDv2Config, cache_dir: Path) -> GLDv2Source:
        columns = Columns(**asdict(data.columns))
        return cls(data.required_root(), clean=data.clean, columns=columns)

    def listing(self) -> Listing:
        if not (self.root / TRAIN).exists():
            raise CatalogError(
                f"{show(self.root)}: no {TRAIN}; data=gldv2 needs data.root to be the folder "
                f"holding GLDv2's {TRAIN}, {HIERARCHY} and train/"
            )
        listing = Listing()
        rows = self._train_rows(listing)
        rows = self._cleaned(rows, listing)
        categories = self._categories()
        stored = self._stored_images()
        without: Counter[str] = Counter()
        for line, image_id, landmark in rows:
            category = categories.get(landmark)
            if not category:
                without[landmark] += 1
            elif image_key(image_id) not in stored:
                reason = f"not downloaded ({TRAIN} line {line}): skipped; download it to use it"
                listing.problems.append(Problem(self.path(image_key(image_id)), reason))
            else:
                listing.candidates.append(Candidate(image_key(image_id), category, landmark))
        listing.dropped += [
            DroppedLandmark(
                "",
                landmark,
                n,
                f"no {self.columns.category} in {HIERARCHY}"
                if landmark in categories
                else f"no row in {HIERARCHY}",
            )
            for landmark, n in sorted(without.items())
        ]
        return listing

    def _train_rows(self, listing: Listing) -> list[tuple[int, str, str]]:
        """(line, id, landmark) of train.csv; malformed and repeated ids are problems."""
        columns = {
            self.columns.path: "data.columns.path",
            self.columns.landmark: "data.columns.landmark",
        }
        rows = []
        first: dict[str, int] = {}
        for line, row in read_columns(self.root / TRAIN, columns):
            image_id, landmark = row[self.columns.path], row[self.columns.landmark]
            if len(image_id) < 3 or not image_id.isalnum() or not landmark:
                reason = (
                    f"{TRAIN} line {line}: malformed id {printable(image_id)!r} or empty landmark"
                )
                listing.problems.append(Problem(self.root / TRAIN, reason))
            elif image_id in first:
                reason = (
                    f"id listed again ({TRAIN} line {line}, first on line {first[image_id]}); "
                    "the repeat is ignored"
                )
                listing.problems.append(Problem(self.path(image_key(image_id)), reason))
            else:
                first[image_id] = line
                rows.append((line, image_id, landmark))
        return rows

    def _cleaned(
        self, rows: list[tuple[int, str, str]], listing: Listing
    ) -> list[tuple[int, str, str]]:
        """The rows train_clean.csv keeps (all of them without the file or with clean off)."""
        path = self.root / CLEAN
        if not self.clean or not path.exists():
            return rows
        columns = {self.columns.landmark: "data.columns.landmark", "images": f"{CLEAN} images"}
        kept = {
            image_id for _, row in read_columns(path, columns) for image_id in row["images"].split()
        }
        cleaned = [row for row in rows if row[1] in kept]
        if not cleaned:
            raise CatalogError(
                f"{show(path)}: keeps none of the {len(rows)} images of {TRAIN}; it belongs "
                "to another release, or set data.clean=false to use every image"
            )
        listing.notes.append(
            f"{CLEAN} keeps {len(cleaned)} of {len(rows)} images of {TRAIN} "
            "(data.clean=false uses them all)"
        )
        return cleaned

    def _stored_images(self) -> set[str]:
        """Keys of every file under ``train/`` (one listing of the tree, no stat per image;
        symbolic links are followed inside the root and refused when they lead out)."""
        stored: set[str] = set()
        seen: set[str] = set()  # real folders walked: a link back up is not walked twice
        pending = [self.root / "train"]
        while pending:
            folder = pending.pop()
            if os.path.realpath(folder) in seen:
                continue
            seen.add(os.path.realpath(folder))
            try:
                with os.scandir(folder) as scan:
                    entries = list(scan)
            except OSError:
                continue  # as os.walk: an unreadable folder's images are "not downloaded"
            relative = folder.relative_to(self.root).as_posix()
            for entry in entries:
                if entry.is_symlink():
                    self.require_inside_root(entry.path)
                if entry.is_dir():
                    pending.append(Path(entry.path))
                else:
                    stored.add(f"{relative}/{entry.name}")
        return stored

    def _categories(self) -> dict[str, str]:
        """Landmark id → category (the configured column of the hierarchy file)."""
        path = self.root / HIERARCHY
        if not path.exists():
            raise CatalogError(
                f"{show(path)}: not found; data=gldv2 takes each landmark's category from "
                "GLDv2's hierarchy file: download it into data.root"
            )
        columns = {
            self.columns.landmark: "data.columns.landmark",
            self.columns.category: "data.columns.category",
        }
        categories: dict[str, str] = {}
        for line, row in read_columns(path, columns):
            landmark, category = row[self.columns.landmark], row[self.columns.category]
            if categories.setdefault(landmark, category) != category:
                raise CatalogError(
                    f"{show(path)}, line {line}: landmark {printable(landmark)} has a second "
                    f"{self.columns.category} {printable(category)!r} (before: "
                    f"{printable(categories[landmark])!r}); keep one row per landmark"
                )
        return categories
