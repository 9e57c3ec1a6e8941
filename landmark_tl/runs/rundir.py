"""Read run directories (metrics.json, predictions.csv, hierarchy.json, logs) and find runs."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landmark_tl.core.errors import UsageError, UserError
from landmark_tl.core.hierarchy import TASKS, LabelHierarchy
from landmark_tl.core.io import printable
from landmark_tl.evaluation.registry import field_of
from landmark_tl.runs.fingerprint import FILENAME, RunDirError, check_run_marker
from landmark_tl.runs.layout import BACKBONE_WEIGHTS, FAILED_FILE, RUN_FORMAT  # noqa: F401 (re-exported)

METRICS_SECTIONS = {"data": dict, "hierarchy": dict, "stages": list, "timings": dict}


class MalformedRunError(UserError, ValueError):
    """A run file that is missing or cannot be read; the message names the file."""


@dataclass(frozen=True)
class Predictions:
    """Test predictions of one run, rows sorted by image path."""

    paths: tuple[str, ...]
    true: dict[str, tuple[str, ...]]
    pred: dict[str, tuple[str, ...]]


def read_text(path: Path) -> str:
    """UTF-8 text; undecodable file-name bytes round-trip as surrogate escapes."""
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or MalformedRunError naming the file."""
    try:
        data = json.loads(read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise MalformedRunError(f"{printable(str(path))}: {error}") from error
    if not isinstance(data, dict):
        raise MalformedRunError(f"{printable(str(path))}: expected a JSON object")
    return data


def run_format(metrics: dict[str, Any]) -> int:
    """The run-dir format a finished run was written in (1 before it was recorded)."""
    return int(metrics.get("run_format", 1))


def read_metrics(path: Path) -> dict[str, Any]:
    """metrics.json, with its optional sections checked for type; a run written by a newer
    landmark_tl (a later run format) is refused, naming both formats."""
    metrics = read_json(path)
    if run_format(metrics) > RUN_FORMAT:
        raise MalformedRunError(
            f"{printable(str(path))}: run format {run_format(metrics)} was written by a newer "
            f"landmark_tl ({metrics.get('provenance', {}).get('versions', {}).get('landmark_tl')}"
            f"); this one reads run formats up to {RUN_FORMAT}: upgrade landmark_tl"
        )
    wrong = [
        k for k, kind in METRICS_SECTIONS.items() if not isinstance(metrics.get(k, kind()), kind)
    ]
    if wrong:
        raise MalformedRunError(f"{printable(str(path))}: sections {wrong} have the wrong type")
    return metrics


def read_predictions(path: Path) -> Predictions:
    """Parse predictions.csv; MalformedRunError if missing, empty, ragged or incomplete."""
    name = printable(str(path))
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path))))
    except (OSError, csv.Error) as error:
        raise MalformedRunError(f"{name}: {error}") from error
    columns = ["path"] + [f"{kind}_{t}" for t in TASKS for kind in ("true", "pred")]
    if not rows:
        raise MalformedRunError(f"{name}: no prediction rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise MalformedRunError(f"{name}: missing columns {missing}")
    for line, row in enumerate(rows, start=2):
        if None in row or any(not row[c] for c in columns):
            raise MalformedRunError(f"{name}: line {line} is ragged or has an empty value")
    rows.sort(key=lambda row: row["path"])
    paths = tuple(row["path"] for row in rows)
    if len(set(paths)) != len(paths):
        raise MalformedRunError(f"{name}: duplicate image paths")
    return Predictions(
        paths=paths,
        true={t: tuple(row[f"true_{t}"] for row in rows) for t in TASKS},
        pred={t: tuple(row[f"pred_{t}"] for row in rows) for t in TASKS},
    )


def read_class_names(run_dir: Path) -> dict[str, list[str]] | None:
    """Class names of each task in index order, from hierarchy.json (None if absent)."""
    path = run_dir / "hierarchy.json"
    if not path.is_file():
        return None
    data = read_json(path)
    try:
        hierarchy = LabelHierarchy.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedRunError(f"{printable(str(path))}: {error!r}") from error
    return hierarchy.names()


def read_epoch_metrics(path: Path) -> dict[str, dict[int, float]]:
    """Per-epoch ``train/...`` and ``val/...`` values of a Lightning CSVLogger metrics.csv.

    Lightning writes train and val values of one epoch on separate rows; the non-empty value
    of each column is kept, keyed by epoch.
    """
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for row in csv.DictReader(io.StringIO(read_text(path))):
        if not row.get("epoch"):
            continue
        epoch = int(float(row["epoch"]))
        for column, value in row.items():
            if column and column.startswith(("train/", "val/")) and value:
                series[column][epoch] = float(value)
    return dict(series)


class NoRunsError(UsageError, FileNotFoundError):
    """A given path holds no metrics.json."""


@dataclass(frozen=True)
class Run:
    """One training run: its metrics.json and test predictions."""

    directory: Path
    metrics: dict[str, Any]
    predictions: Predictions

    @property
    def approach(self) -> str:
        name = self.metrics.get("approach") or self.metrics.get("strategy")
        return str(name or self.directory.name)

    @property
    def overrides(self) -> tuple[str, ...]:
        """The run's command-line overrides, as recorded in metrics.json."""
        return tuple(str(o) for o in self.metrics.get("overrides", []))

    @property
    def train_seconds(self) -> float | None:
        """``timings.train_s``, else the sum of the stages' seconds."""
        train_s = self.metrics.get("timings", {}).get("train_s")
        if train_s is not None:
            return float(train_s)
        seconds = [s["seconds"] for s in self.metrics.get("stages", []) if "seconds" in s]
        return float(sum(seconds)) if seconds else None

    def val_f1(self, task: str) -> float | None:
        """Validation macro F1 of ``task`` (of the checkpoint that was tested), if recorded."""
        value = self.metrics.get("val", {}).get(task, {}).get("macro_f1")
        return None if value is None else float(value)

    @property
    def monitor(self) -> str:
        """What the run's stages kept their checkpoints by (strategy.monitor)."""
        monitors = {s.get("monitor") or "val/loss" for s in self.metrics.get("stages", [])}
        return monitors.pop() if len(monitors) == 1 else "val/loss"

    def val_score(self, monitor: str) -> float | None:
        """The validation score a monitor names (``val/landmark_f1``: landmark macro F1;
        ``val/f1``, ``val/acc``: the mean over tasks), of the tested checkpoint; None for a
        loss or a value not recorded."""
        name = monitor.removeprefix("val/")
        field = field_of(name.rpartition("_")[2])  # a registered task metric's field
        tasks = [name.rpartition("_")[0]] if "_" in name else list(TASKS)
        values = [self.metrics.get("val", {}).get(t, {}).get(field or "") for t in tasks]
        if field is None or None in values:
            return None
        return float(sum(values) / len(values))

    def hierarchy_metric(self, key: str) -> float | None:
        value = self.metrics.get("hierarchy", {}).get(key)
        return None if value is None else float(value)


def find_metrics_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every metrics.json below ``paths``; NoRunsError names a path without one."""
    found: set[Path] = set()
    for path in map(Path, paths):
        files = sorted(path.rglob("metrics.json")) if path.is_dir() else []
        if path.is_file() and path.name == "metrics.json":
            files = [path]
        if not files:
            raise NoRunsError(f"no metrics.json found below {printable(str(path))}")
        found.update(f.resolve() for f in files)
    return sorted(found)


def unfinished_runs(paths: Iterable[str | Path]) -> list[str]:
    """Run dirs below ``paths`` that started (a fingerprint) but have no metrics.json, each
    described with the error its ``failed.json`` records, if any."""
    lines = []
    for path in map(Path, paths):
        marks = [f for name in (FILENAME, FAILED_FILE) for f in path.rglob(name)]
        started = sorted({f.parent for f in marks}) if path.is_dir() else []
        for run_dir in (d for d in started if not (d / "metrics.json").exists()):
            why = "unfinished: still running, or killed (resume=true continues it)"
            if (run_dir / FAILED_FILE).is_file():
                try:
                    why = f"failed: {read_json(run_dir / FAILED_FILE)['error']}"
                except (MalformedRunError, KeyError, TypeError):
                    why = f"failed (unreadable {FAILED_FILE})"
            lines.append(f"skipped run {printable(str(run_dir))}: {why}")
    return lines


def collect_runs(paths: Iterable[str | Path]) -> tuple[list[Run], list[str]]:
    """Load the runs below ``paths``; runs with unreadable files, and runs that failed or
    never finished, are skipped and described."""
    paths = list(paths)

    runs, skipped = [], []
    for metrics_path in find_metrics_files(paths):
        run_dir = metrics_path.parent
        try:
            metrics = read_metrics(metrics_path)
            check_run_marker(run_dir, metrics)
            if metrics.get("data", {}).get("split", {}).get("test") == 0:
                raise MalformedRunError("no test split (data.split.test=0): nothing to compare")
            runs.append(Run(run_dir, metrics, read_predictions(run_dir / "predictions.csv")))
        except (MalformedRunError, RunDirError) as error:
            skipped.append(f"skipped run {printable(str(run_dir))}: {error}")
    return runs, skipped + unfinished_runs(paths)
