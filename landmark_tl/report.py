"""Compare runs: one row per approach with seed spread, bootstrap intervals and a paired test.

    python -m landmark_tl.report DIR [DIR ...] [--out OUT] [--bootstrap 2000] [--seed 0]

Finds every metrics.json below the DIRs (runs, Hydra multiruns, parents of either), groups
the runs by approach and sweep point (the overrides that differ between runs, seeds
excepted) and writes table1.md, table1.csv and table1.png, best first.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landmark_tl.errors import command
from landmark_tl.io import atomic_write_text, printable
from landmark_tl.plots import bar_chart_figure, save_png
from landmark_tl.rundir import TASKS, NoRunsError, Run, collect_runs
from landmark_tl.stats import (
    Comparison,
    batched_macro_f1,
    intervals_overlap,
    paired_comparison,
    percentile_interval,
    resample_indices,
    seed_averaged_f1,
)

BEST, SAME, WORSE = "best", "≈ best", "worse"
UNPAIRED = "†"


@dataclass(frozen=True)
class TaskScore:
    """Macro F1 of one task for one approach.

    ``mark`` is BEST, SAME or WORSE; ``comparison`` the paired bootstrap against the best;
    ``fallback`` is set when test images differ and CI overlap decided the mark instead.
    """

    mean: float
    std: float | None
    ci_low: float
    ci_high: float
    mark: str
    fallback: bool
    comparison: Comparison | None


@dataclass(frozen=True)
class ApproachRow:
    """One row of Table 1: an approach's runs summarised; None where no run had the value."""

    approach: str
    seeds: tuple[Any, ...]
    scores: dict[str, TaskScore]
    val_landmark_f1: float | None
    val_ranking: float | None  # the validation score the rows are ranked by
    full_path_accuracy: float | None
    consistency: float | None
    train_seconds: float | None


@dataclass(frozen=True)
class Table:
    """Table 1 and what it was computed from."""

    rows: list[ApproachRow]
    ranked_by: str
    roots: tuple[str, ...]
    test_images: tuple[int, ...]
    bootstrap: int
    seed: int


@dataclass(frozen=True)
class _Samples:
    """One approach, one task: per-seed F1, per-resample seed-averaged F1, shared test paths."""

    per_seed: np.ndarray
    resampled: np.ndarray
    paths: tuple[str, ...] | None


_NOT_A_POINT = ("seed=", "experiment=", "sweep=", "approach=", "+approach=", "hydra")


def point_label(run: Run, shared: set[str]) -> str:
    """The approach, plus the overrides that set this run apart (seeds excepted)."""
    own = [o for o in run.overrides if o not in shared and not o.startswith(_NOT_A_POINT)]
    return " ".join([run.approach, *own])


def _group(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by approach and sweep point; seeds of one point form one group."""
    shared = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(point_label(run, shared), []).append(run)
    return groups


def _encode(runs: Sequence[Run], task: str) -> tuple[dict[Path, tuple[np.ndarray, ...]], int]:
    """Each run's (preds, targets) as indices into the names seen in all runs; class count."""
    names = sorted({n for r in runs for n in r.predictions.true[task] + r.predictions.pred[task]})
    index = {name: i for i, name in enumerate(names)}

    def codes(labels: tuple[str, ...]) -> np.ndarray:
        return np.array([index[name] for name in labels])

    pairs = {
        r.directory: (codes(r.predictions.pred[task]), codes(r.predictions.true[task]))
        for r in runs
    }
    return pairs, len(names)


def _samples(
    group: Sequence[Run],
    labels: dict[Path, tuple[np.ndarray, ...]],
    draws: dict[tuple[str, ...], np.ndarray],
    num_classes: int,
    rng: np.random.Generator,
) -> _Samples:
    """Per-seed and per-resample F1 of one approach's runs on one task."""
    pairs = [labels[r.directory] for r in group]
    per_seed = np.array([batched_macro_f1(p, t, num_classes)[0] for p, t in pairs])
    indices = [draws[r.predictions.paths] for r in group]
    shared = {r.predictions.paths for r in group}
    return _Samples(
        per_seed,
        seed_averaged_f1(pairs, indices, num_classes, rng),
        shared.pop() if len(shared) == 1 else None,
    )


def _score(samples: _Samples, best: _Samples, is_best: bool) -> TaskScore:
    """Mark one approach against the best: paired bootstrap, or CI overlap if not paired."""
    interval = percentile_interval(samples.resampled)
    paired = samples.paths is not None and samples.paths == best.paths
    comparison = None
    if is_best:
        mark = BEST
    elif paired:
        comparison = paired_comparison(best.resampled, samples.resampled)
        mark = WORSE if comparison.distinguishable else SAME
    else:
        mark = SAME if intervals_overlap(interval, percentile_interval(best.resampled)) else WORSE
    std = float(np.std(samples.per_seed, ddof=1)) if len(samples.per_seed) > 1 else None
    fallback = not (paired or is_best)
    return TaskScore(float(samples.per_seed.mean()), std, *interval, mark, fallback, comparison)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def ranking_monitor(runs: Sequence[Run]) -> str:
    """The validation score to rank by: the runs' common ``strategy.monitor`` when it is a
    score; else (a loss, which does not compare across strategies) landmark macro F1."""
    monitors = {r.monitor for r in runs}
    monitor = monitors.pop() if len(monitors) == 1 else "val/loss"
    usable = all(r.val_score(monitor) is not None for r in runs)
    return monitor if usable else "val/landmark_f1"


_RANKING_NAMES = {"val/landmark_f1": "validation landmark macro F1"}


def summarise(runs: Sequence[Run], bootstrap: int = 2000, seed: int = 0) -> Table:
    """One row per approach (or sweep point), best first: ranked by the validation score
    of :func:`ranking_monitor` when every run recorded it (choosing on test scores would
    flatter the winner), else by test landmark macro F1."""
    if not runs:
        raise ValueError("no runs to summarise")
    groups = _group(runs)
    rng = np.random.default_rng(seed)
    strata = {r.predictions.paths: r.predictions.true["landmark"] for r in runs}
    path_sets = sorted(strata, key=lambda p: (len(p), p))
    draws = {p: resample_indices(strata[p], bootstrap, rng) for p in path_sets}
    scores: dict[str, dict[str, TaskScore]] = {name: {} for name in groups}
    for task in TASKS:
        labels, num_classes = _encode(runs, task)
        samples = {
            name: _samples(group, labels, draws, num_classes, rng) for name, group in groups.items()
        }
        best = max(samples, key=lambda name: samples[name].per_seed.mean())
        for name, s in samples.items():
            scores[name][task] = _score(s, samples[best], name == best)
    monitor = ranking_monitor(runs)
    rows = [
        ApproachRow(
            approach=name,
            seeds=tuple(r.metrics.get("seed") for r in group),
            scores=scores[name],
            val_landmark_f1=_mean(r.val_f1("landmark") for r in group),
            val_ranking=_mean(r.val_score(monitor) for r in group),
            full_path_accuracy=_mean(r.hierarchy_metric("full_path_accuracy") for r in group),
            consistency=_mean(r.hierarchy_metric("consistency") for r in group),
            train_seconds=_mean(r.train_seconds for r in group),
        )
        for name, group in groups.items()
    ]
    by_val = all(row.val_ranking is not None for row in rows)
    rows.sort(key=lambda row: -(row.val_ranking if by_val else row.scores["landmark"].mean))
    return Table(
        rows,
        _RANKING_NAMES.get(monitor, f"validation {monitor}") if by_val else "",
        roots=tuple(sorted({str(r.metrics.get("data", {}).get("root", "?")) for r in runs})),
        test_images=tuple(sorted({len(p) for p in path_sets})),
        bootstrap=bootstrap,
        seed=seed,
    )


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _versus_best(score: TaskScore) -> str:
    text = score.mark + (UNPAIRED if score.fallback else "")
    if score.comparison is not None:
        text += f" ({score.comparison.share_at_least_best:.2f})"
    return text


def _markdown_cells(row: ApproachRow) -> list[str]:
    cells = [row.approach.replace("|", "\\|"), str(len(row.seeds))]
    for task in TASKS:
        s = row.scores[task]
        std = "—" if s.std is None else f"{s.std:.3f}"
        cells += [f"{s.mean:.3f} ± {std}", f"[{s.ci_low:.3f}, {s.ci_high:.3f}]", _versus_best(s)]
    return cells + [
        _number(row.val_landmark_f1),
        _number(row.full_path_accuracy),
        _number(row.consistency),
        _number(row.train_seconds, 1),
    ]


def _best_line(table: Table) -> list[str]:
    """Name the best row when the ranking is by validation score (a sweep's choice)."""
    top = table.rows[0]
    if not table.ranked_by:
        return []
    return ["", f"Best by {table.ranked_by}: **{top.approach}** ({top.val_ranking:.3f})."]


def markdown_table(table: Table, skipped: Sequence[str] = ()) -> str:
    """Table 1 as Markdown: a header line, the table, a legend and any skipped runs."""
    runs = sum(len(row.seeds) for row in table.rows)
    roots = ", ".join(f"`{printable(root)}`" for root in table.roots)
    images = "/".join(map(str, table.test_images))
    approaches = _count(len(table.rows), "approach", "approaches")
    header = ["Approach", "Seeds"]
    for task in TASKS:
        header += [f"{task.capitalize()} F1", "95% CI", "vs best"]
    header += ["Val landmark F1", "Full-path acc.", "Consistency", "Train s"]
    lines = [
        "# Table 1: approaches compared",
        "",
        f"{_count(runs, 'run', 'runs')} of {approaches} on {roots}; {images} test images; "
        f"bootstrap B = {table.bootstrap} (seed {table.seed}).",
        *_best_line(table),
        "",
        "| " + " | ".join(header) + " |",
        "|---|--:|" + "--:|--:|---|" * len(TASKS) + "--:|--:|--:|--:|",
        *("| " + " | ".join(_markdown_cells(row)) + " |" for row in table.rows),
        "",
        f"Rows are ranked by {table.ranked_by or 'test landmark macro F1 (no validation score)'}"
        " (strategy.monitor when it is a score). "
        "F1: macro F1 on the test images, mean ± std over seeds (— with one seed). "
        "95% CI: two-level percentile bootstrap: test images (resampled within each "
        "landmark, the same draws for every approach) and seeds (with replacement); "
        "the drawn seeds averaged. "
        f"vs best: **{BEST}** = highest mean F1 of the task; **{SAME}** = not distinguishable "
        "from the best (paired bootstrap 95% CI of the difference contains 0); "
        f"**{WORSE}** = that interval excludes 0. In parentheses: share of resamples in which "
        "the approach scores at least the best's F1.",
    ]
    if any(s.fallback for row in table.rows for s in row.scores.values()):
        lines += [
            "",
            f"{UNPAIRED} test images differ from the best's: compared by overlap of "
            "the two 95% CIs instead of the paired test.",
        ]
    if any(row.val_landmark_f1 is None for row in table.rows):
        lines += [
            "",
            "Val landmark F1 — : no validation split (data.split.val=0 or a split file without "
            "val rows); each stage kept its last epoch.",
        ]
    if skipped:
        lines += ["", "Skipped runs:", *(f"- {line}" for line in skipped)]
    return "\n".join(lines) + "\n"


def _csv_header() -> list[str]:
    fields = ["mean", "std", "ci_low", "ci_high", "mark", "fallback"]
    fields += ["diff_ci_low", "diff_ci_high", "share_at_least_best"]
    per_task = [f"{task}_f1_{field}" for task in TASKS for field in fields]
    rest = ["val_landmark_f1", "full_path_accuracy", "consistency", "train_s"]
    return ["approach", "runs", "seeds", *per_task, *rest]


def _csv_cells(row: ApproachRow) -> list[Any]:
    cells: list[Any] = [row.approach, len(row.seeds), " ".join(map(str, row.seeds))]
    for task in TASKS:
        s, c = row.scores[task], row.scores[task].comparison
        cells += [s.mean, s.std, s.ci_low, s.ci_high, s.mark, int(s.fallback)]
        cells += (
            [None, None, None] if c is None else [c.diff_low, c.diff_high, c.share_at_least_best]
        )
    cells += [row.val_landmark_f1, row.full_path_accuracy, row.consistency, row.train_seconds]
    return ["" if cell is None else cell for cell in cells]


def csv_table(table: Table) -> str:
    """Table 1 as CSV, one column per number, for machines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_csv_header())
    writer.writerows(_csv_cells(row) for row in table.rows)
    return out.getvalue()


def write_report(table: Table, out_dir: str | Path, skipped: Sequence[str] = ()) -> dict[str, Path]:
    """Write table1.md, table1.csv and the bar chart table1.png into ``out_dir``."""
    out_dir = Path(out_dir)
    labels = [row.approach for row in table.rows]
    series = {
        task: tuple(
            [getattr(row.scores[task], field) for row in table.rows]
            for field in ("mean", "ci_low", "ci_high")
        )
        for task in TASKS
    }
    title = f"Macro F1 by approach (bootstrap B = {table.bootstrap})"
    return {
        "markdown": atomic_write_text(out_dir / "table1.md", markdown_table(table, skipped)),
        "csv": atomic_write_text(out_dir / "table1.csv", csv_table(table)),
        "png": save_png(bar_chart_figure(labels, series, title), out_dir / "table1.png"),
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m landmark_tl.report",
        description="Compare runs: Table 1 (Markdown, CSV, bar chart) with bootstrap statistics.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="runs or multiruns")
    parser.add_argument("--out", type=Path, help="output folder (default: the first DIR)")
    parser.add_argument("--bootstrap", type=_positive, default=2000, help="resamples B")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    return parser.parse_args(argv)


@command
def main(argv: list[str]) -> int:
    """Command line entry point; 2 when a path holds no usable run."""
    args = parse_args(argv)
    try:
        runs, skipped = collect_runs(args.dirs)
    except NoRunsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"warning: {line}", file=sys.stderr)
    if not runs:
        print("error: every run found was skipped; nothing to report", file=sys.stderr)
        return 2
    table = summarise(runs, bootstrap=args.bootstrap, seed=args.seed)
    first = args.dirs[0]
    files = write_report(table, args.out or (first if first.is_dir() else first.parent), skipped)
    print(markdown_table(table, skipped))
    print("wrote " + ", ".join(printable(str(p)) for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
