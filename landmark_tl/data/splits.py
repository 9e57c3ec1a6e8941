"""Train/val/test split stratified by landmark, and its CSV manifest.

Each landmark's images are shuffled with an RNG seeded by ``(seed, category, landmark)``, so
a split is the same in every process and adding images to one landmark leaves the others'
splits unchanged. The manifest (``split,category,landmark,path``, paths relative to the
catalog root, whatever the data source) records a split so that it can be reused exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from landmark_tl.core.io import atomic_write_text, printable, require_regular_file
from landmark_tl.data.catalog import Catalog
from landmark_tl.data.records import ImageRecord
from landmark_tl.data.split_spec import SmallLandmarks, SplitError, SplitSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("split", "category", "landmark", "path")
_MAX_LISTED = 10
_SHOWN_FILES = 3


def assign_splits(
    catalog: Catalog, spec: SplitSpec, split_file: str | Path | None = None
) -> list[str]:
    """The split of each record, from ``split_file`` when given, else stratified by ``spec``;
    refused (SplitError) unless every landmark keeps at least one training image."""
    if split_file:
        assignment = read_split_csv(split_file, catalog)
        source = f"data.split_file={_show(Path(split_file))}"
    else:
        assignment = stratified_split(catalog, spec)
        source = f"data.split.val={spec.val}, data.split.test={spec.test}"
    check_every_landmark_trains(catalog, assignment, source)
    warn_if_outweighed(assignment, source)
    return assignment


def warn_if_outweighed(assignment: Sequence[str], source: str) -> str | None:
    """Log (and return) a warning when val or test holds more images than train: with
    counts per landmark, small landmarks give most of their images to evaluation."""
    sizes = split_sizes(assignment)
    heavier = [s for s in ("val", "test") if sizes[s] > sizes["train"]]
    if not heavier:
        return None
    message = (
        f"{source}: {' and '.join(f'{s} ({sizes[s]} images)' for s in heavier)} outweighs "
        f"train ({sizes['train']} images); lower the counts or give fractions "
        "(e.g. data.split.val=0.1 data.split.test=0.2)"
    )
    log.warning(message)
    return message


def check_every_landmark_trains(catalog: Catalog, assignment: Sequence[str], source: str) -> None:
    """Refuse a split that leaves a landmark without training images (its class could never
    be learnt, yet it would be scored)."""
    trained = {
        (r.category, r.landmark)
        for r, split in zip(catalog.records, assignment, strict=True)
        if split == "train"
    }
    untrained = [pair for pair in catalog.hierarchy.landmarks if pair not in trained]
    if untrained:
        raise SplitError(
            f"{source}: {len(untrained)} landmarks have no training image:\n  "
            + "\n  ".join(printable("/".join(pair)) for pair in untrained[:_MAX_LISTED])
            + _more(len(untrained), _MAX_LISTED)
            + "\nMove at least one image of each to train (split column), or regenerate the "
            "split without data.split_file."
        )


def split_sizes(assignment: Sequence[str]) -> dict[str, int]:
    """Number of images in each split (0 for an empty one)."""
    return {split: sum(1 for a in assignment if a == split) for split in SPLITS}


def stratified_split(catalog: Catalog, spec: SplitSpec) -> list[str]:
    """The split name of each catalog record (same order), stratified by landmark.

    Landmarks too small for the split are refused (``small=error``) or go to train whole.
    """
    groups = _group_by_landmark(catalog.records)
    if spec.small is SmallLandmarks.error:
        _check_sizes(catalog.root, groups, spec)
    assignment = ["train"] * len(catalog.records)
    for (category, landmark), indices in groups.items():
        if spec.too_small(len(indices)):
            continue
        order = sorted(indices, key=lambda i: catalog.records[i].path)
        _rng(spec.seed, category, landmark).shuffle(order)
        n_val, n_test = spec.counts(len(order))
        for i in order[:n_val]:
            assignment[i] = "val"
        for i in order[n_val : n_val + n_test]:
            assignment[i] = "test"
    return assignment


def _group_by_landmark(records: Sequence[ImageRecord]) -> dict[tuple[str, str], list[int]]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault((record.category, record.landmark), []).append(i)
    return groups


def _rng(seed: int, category: str, landmark: str) -> random.Random:
    """An RNG that is the same in every process (bytes seeds are hashed deterministically)."""
    key = f"{seed}/{category}/{landmark}".encode("utf-8", errors="surrogateescape")
    return random.Random(key)


def _check_sizes(root: Path, groups: dict[tuple[str, str], list[int]], spec: SplitSpec) -> None:
    """Refuse landmarks too small to give val, test and at least one train image."""
    offenders = []
    for pair, indices in groups.items():
        n_val, n_test = spec.counts(len(indices))
        if len(indices) < n_val + n_test + 1:
            offenders.append(
                f"landmark {printable('/'.join(pair))}: {len(indices)} images, "
                f"needs {n_val + n_test + 1} ({n_val} val + {n_test} test + 1 train)"
            )
    if offenders:
        raise SplitError(
            f"{len(offenders)} landmarks have too few images for data.split.val={spec.val}, "
            f"data.split.test={spec.test}:\n  "
            + "\n  ".join(offenders[:_MAX_LISTED])
            + _more(len(offenders), _MAX_LISTED)
            + "\nAdd images of these landmarks (to the folder, manifest or shards of "
            f"{printable(str(root))}), lower data.split.val / data.split.test, "
            "use fractions (e.g. data.split.val=0.1), or set data.split.small=train_only "
            "(they only train) or data.split.small=drop (they are left out)."
        )


def _more(total: int, shown: int) -> str:
    return f"\n  ... and {total - shown} more" if total > shown else ""


def write_split_csv(path: str | Path, catalog: Catalog, assignment: Sequence[str]) -> None:
    """Write the manifest ``split,category,landmark,path`` atomically, sorted by path."""
    _check_assignment(catalog, assignment)
    rows = sorted(
        (r.category, r.landmark, catalog.key(r.path), split)
        for r, split in zip(catalog.records, assignment, strict=True)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows((split, category, landmark, rel) for category, landmark, rel, split in rows)
    atomic_write_text(path, buffer.getvalue())


def _check_assignment(catalog: Catalog, assignment: Sequence[str]) -> None:
    if len(assignment) != len(catalog.records):
        raise SplitError(
            f"assignment has {len(assignment)} entries for {len(catalog.records)} records"
        )
    unknown = sorted(set(assignment) - set(SPLITS))
    if unknown:
        raise SplitError(f"unknown split names {unknown}; expected one of {SPLITS}")


def read_split_csv(path: str | Path, catalog: Catalog) -> list[str]:
    """The split of each catalog record according to the manifest at ``path``.

    The manifest must list exactly the catalog's images with the catalog's labels: extra or
    missing files, or other labels, raise.
    """
    path = Path(path)
    rows = _read_manifest(path)
    labels = {catalog.key(r.path): (r.category, r.landmark) for r in catalog.records}
    mismatch = _mismatch_messages(path, catalog.root, rows, labels)
    if mismatch:
        raise SplitError("\n".join(mismatch))
    return [rows[key][0] for key in labels]


def _read_manifest(path: Path) -> dict[str, tuple[str, str, str]]:
    """Relative path → (split, category, landmark), the manifest's form checked by row."""
    try:
        require_regular_file(path)  # a folder fails to open, a FIFO would block
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            return _parse_manifest(path, csv.DictReader(f, strict=True))
    except FileNotFoundError as error:
        raise SplitError(f"{_show(path)}: split manifest not found; check the path") from error
    except IsADirectoryError as error:
        inside = path / "split.csv"
        hint = f" (e.g. data.split_file={_show(inside)})" if inside.is_file() else ""
        raise SplitError(
            f"data.split_file={_show(path)} is a folder: give the split.csv file of a run{hint}"
        ) from error
    except OSError as error:
        raise SplitError(
            f"data.split_file={_show(path)}: cannot read it ({error.strerror}); give a readable "
            "split.csv file"
        ) from error
    except csv.Error as error:
        raise SplitError(f"{_show(path)}: not a valid CSV file ({error})") from error


def _parse_manifest(path: Path, reader: csv.DictReader[str]) -> dict[str, tuple[str, str, str]]:
    missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SplitError(
            f"{_show(path)}: split manifest lacks columns {missing}; "
            f"expected a header {','.join(MANIFEST_COLUMNS)}"
        )
    rows: dict[str, tuple[str, str, str]] = {}
    for row in reader:
        problem = _row_problem(row, rows)
        if problem:
            raise SplitError(f"{_show(path)}, line {reader.line_num}: {problem}")
        rows[row["path"]] = (row["split"], row["category"], row["landmark"])
    return rows


def _row_problem(row: dict[str, str], seen: dict[str, tuple[str, str, str]]) -> str | None:
    """What is wrong with one manifest row, or None."""
    if any(row.get(column) is None for column in MANIFEST_COLUMNS):
        return f"too few fields; expected {','.join(MANIFEST_COLUMNS)}"
    if row["split"] not in SPLITS:
        return f"unknown split {printable(row['split'])!r}; expected one of {SPLITS}"
    posix = PurePosixPath(row["path"])
    if posix.is_absolute() or ".." in posix.parts or not posix.parts:
        return f"path {printable(row['path'])!r} must be relative to the data root, without '..'"
    if row["path"] in seen:
        return f"{printable(row['path'])!r} is listed twice"
    return None


def _mismatch_messages(
    path: Path,
    root: Path,
    rows: dict[str, tuple[str, str, str]],
    expected: dict[str, tuple[str, str]],
) -> list[str]:
    """Messages for manifest files missing from the catalog, catalog images not listed, and
    images listed with other labels than the catalog's."""
    messages = []
    unknown = sorted(set(rows) - set(expected))
    if unknown:
        messages.append(
            f"{_show(path)}: lists {len(unknown)} files not among the readable images of "
            f"{_show(root)} ({_examples(unknown)}): the manifest belongs to another tree, or "
            "files were removed or became unreadable; restore them or regenerate the split"
        )
    unlisted = sorted(set(expected) - set(rows))
    if unlisted:
        messages.append(
            f"{_show(path)}: does not list {len(unlisted)} images of {_show(root)} "
            f"({_examples(unlisted)}); they would be left out of every split; regenerate "
            "the split or remove those files"
        )
    relabelled = sorted(k for k in set(rows) & set(expected) if rows[k][1:] != expected[k])
    if relabelled:
        messages.append(
            f"{_show(path)}: lists {len(relabelled)} images of {_show(root)} under other "
            f"labels than the data ({_examples(relabelled)}); the labels changed since the "
            "split was made: regenerate the split"
        )
    return messages


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(printable(name) for name in names[:_SHOWN_FILES])
    return f"e.g. {shown}" + (", ..." if len(names) > _SHOWN_FILES else "")


def _show(path: Path) -> str:
    return printable(str(path))
