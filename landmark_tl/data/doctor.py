"""``landmark-tl doctor [data=folder|manifest|gldv2|shards] data.root=PATH``: check data first.

Prints images per landmark and everything that training would skip or refuse: unreadable,
truncated or duplicate files (catalog problems), tiny images, unusual image modes, names
that collide once normalised, landmarks too small for the split. Exits 1 when training
could not proceed. Training writes the same report to its run dir (``data_report.md``).
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from landmark_tl.core.io import printable
from landmark_tl.data.catalog import Catalog, build_catalog
from landmark_tl.data.index import CatalogIndex
from landmark_tl.data.longtail import drop_small_landmarks
from landmark_tl.data.records import CatalogError, DroppedLandmark
from landmark_tl.data.sources import ImageSource
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.splits import SplitError, SplitSpec, assign_splits

TINY_PIXELS = 32  # shorter side below this: upscaled a lot by the backbone's resize
USUAL_MODES = frozenset({"RGB", "L"})


@dataclass
class DataReport:
    """What a data tree holds and what would stop or degrade training."""

    root: Path
    per_landmark: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    dropped: list[DroppedLandmark] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tiny: list[tuple[Path, tuple[int, int]]] = field(default_factory=list)
    odd_modes: list[tuple[Path, str]] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)
    split_error: str | None = None
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        """Whether training could proceed on this tree with this split."""
        return self.fatal is None and self.split_error is None


def normalised(name: str) -> str:
    """A name as people read it: Unicode NFC, case-folded, inner spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", printable(name)).casefold().split())


def name_collisions(catalog: Catalog) -> list[str]:
    """Categories, or landmarks of one category, whose names differ only in case/spacing."""
    groups: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for category, landmark in catalog.hierarchy.landmarks:
        groups[("category", normalised(category))].add(category)
        groups[("landmark", category, normalised(landmark))].add(landmark)
    return [
        f"{key[0]} names {sorted(printable(n) for n in names)} differ only in case, "
        "spacing or Unicode form: rename one, or they stay separate classes"
        for key, names in groups.items()
        if len(names) > 1
    ]


def inspect_catalog(
    catalog: Catalog, split: SplitSpec, split_file: str | Path | None = None
) -> DataReport:
    """A report on an already-scanned catalog (sizes and modes from its index, or from the
    image headers without one); the split is checked as training would make it: from
    ``split_file`` when given."""
    counts = Counter((r.category, r.landmark) for r in catalog.records)
    report = DataReport(
        catalog.root,
        per_landmark=[(c, lm, counts[(c, lm)]) for c, lm in catalog.hierarchy.landmarks],
        problems=[(p.path, p.reason) for p in catalog.problems],
        dropped=list(catalog.dropped),
        notes=list(catalog.notes),
        collisions=name_collisions(catalog),
    )
    for path, size, mode in catalog.image_info():
        if min(size) < TINY_PIXELS:
            report.tiny.append((path, size))
        if mode not in USUAL_MODES:
            report.odd_modes.append((path, mode))
    report.tiny.sort()
    report.odd_modes.sort()
    try:
        assign_splits(catalog, split, split_file)
    except SplitError as err:
        report.split_error = str(err)
    return report


def inspect_source(
    source: ImageSource,
    split: SplitSpec | None = None,
    split_file: str | Path | None = None,
    min_images_per_landmark: int = 1,
    index: CatalogIndex | None = None,
) -> DataReport:
    """Read ``source`` (through ``index``, the one training uses) and report on it; data
    that cannot be used gives ``fatal``."""
    split = split or SplitSpec()
    try:
        catalog = build_catalog(source, index=index)
        catalog = drop_small_landmarks(catalog, min_images_per_landmark, split)
    except CatalogError as err:
        return DataReport(source.root, fatal=str(err))
    return inspect_catalog(catalog, split, split_file)


def inspect_tree(
    root: str | Path, split: SplitSpec | None = None, split_file: str | Path | None = None
) -> DataReport:
    """Scan the folder tree ``root`` and report on it."""
    return inspect_source(FolderSource(root), split, split_file)


def _listing(title: str, lines: Sequence[str], limit: int = 20) -> list[str]:
    if not lines:
        return []
    more = [f"- ... and {len(lines) - limit} more"] if len(lines) > limit else []
    return ["", f"## {title} ({len(lines)})", "", *(f"- {line}" for line in lines[:limit]), *more]


def format_report(report: DataReport) -> str:
    """The report as Markdown: verdict, table per landmark, then each kind of issue."""
    verdict = "ready to train" if report.ok else "training cannot proceed"
    lines = [f"# Data report: {printable(str(report.root))}", "", f"**{verdict}**"]
    if report.fatal:
        return "\n".join([*lines, "", report.fatal]) + "\n"
    images = sum(n for *_, n in report.per_landmark)
    categories = len({c for c, *_ in report.per_landmark})
    lines += [
        "",
        f"{categories} categories, {len(report.per_landmark)} landmarks, {images} usable images.",
        "",
        "| category | landmark | images |",
        "|---|---|--:|",
        *(f"| {printable(c)} | {printable(lm)} | {n} |" for c, lm, n in report.per_landmark),
    ]
    lines += _listing("Split", [report.split_error] if report.split_error else [])
    lines += _listing(
        "Dropped landmarks",
        [
            f"{printable(d.category + '/' if d.category else '')}{printable(d.landmark)} "
            f"({d.images} images): {d.reason}"
            for d in report.dropped
        ],
    )
    lines += _listing(
        "Skipped files", [f"{printable(str(p))}: {why}" for p, why in report.problems]
    )
    lines += _listing("Notes", report.notes)
    lines += _listing("Name collisions", report.collisions)
    lines += _listing(
        f"Tiny images (shorter side < {TINY_PIXELS} px)",
        [f"{printable(str(p))}: {w}x{h}" for p, (w, h) in report.tiny],
    )
    lines += _listing(
        "Unusual image modes (converted to RGB)",
        [f"{printable(str(p))}: {mode}" for p, mode in report.odd_modes],
    )
    return "\n".join(lines) + "\n"


def folder_by_default(overrides: Sequence[str]) -> list[str]:
    """``overrides``, where ``data.root=`` without ``data=`` means ``data=folder`` (doctor
    and shards are pointed at a tree)."""
    overrides = list(overrides)
    if any(o.startswith("data.root=") for o in overrides) and not any(
        o.startswith("data=") for o in overrides
    ):
        overrides.insert(0, "data=folder")
    return overrides
