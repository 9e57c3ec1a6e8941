"""Compare runs: one row per approach with seed spread, bootstrap intervals and paired tests.

    landmark-tl report runs=DIR [runs=[DIR1,DIR2]] [out=OUT] [study=ID|all] [bootstrap=2000]

Finds every metrics.json below the DIRs (runs, Hydra multiruns, parents of either), puts
debug, failed and unfinished runs apart, groups the others by study and, within a study, by
approach and sweep point (see :mod:`landmark_tl.reporting.studies`), and writes table1.md,
table1.csv, table1.tex (booktabs), table1.png and report.html (with one page per run), best
first.

Runs on different splits (different test images, e.g. ``data.split.seed``) of one approach
are pooled: the split is a resampling level of the bootstrap, shared by all approaches.
Each row is compared with the best row (and with the ``linear_probe`` row, when there is
one) by a paired bootstrap; the verdicts are Holm-corrected for the number of rows.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure
from omegaconf import MISSING

from landmark_tl.core.io import atomic_write_text, printable
from landmark_tl.evaluation.stats import (
    batched_macro_f1,
    bootstrap_p_value,
    holm_adjust,
    intervals_overlap,
    paired_comparison,
    percentile_interval,
    resample_indices,
    seed_averaged_f1,
)
from landmark_tl.reporting.mistakes import (
    mistakes_csv_cells,
    mistakes_csv_header,
    mistakes_markdown,
    summarise_mistakes,
)
from landmark_tl.reporting.plots import bar_chart_figure, save_png
from landmark_tl.reporting.recommendation import recommend, recommendation_lines
from landmark_tl.reporting.report_latex import latex_table
from landmark_tl.reporting.studies import Inventory, row_groups
from landmark_tl.reporting.table import ApproachRow, Table, TaskScore, VersusProbe
from landmark_tl.runs.rundir import TASKS, Run

BEST, SAME, WORSE = "best", "≈ best", "worse"
ABOVE_PROBE, SAME_AS_PROBE, BELOW_PROBE = "> probe", "≈ probe", "< probe"
PROBE = "linear_probe"  # the baseline row every other row is compared with
ALPHA = 0.05  # family-wise error rate of each task's verdicts (Holm)
UNPAIRED = "†"


SplitKey = tuple[tuple[str, ...], ...]  # the sorted test-path sets of a group's splits


@dataclass(frozen=True)
class _Samples:
    """One approach, one task: per-run F1, per-resample F1 (seeds averaged within each split,
    drawn splits averaged), its splits, and the mean F1 on each split."""

    per_seed: np.ndarray
    resampled: np.ndarray
    splits: SplitKey
    split_means: dict[tuple[str, ...], float]


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


def _split_key(group: Sequence[Run]) -> SplitKey:
    return tuple(sorted({r.predictions.paths for r in group}, key=lambda p: (len(p), p)))


def _samples(
    group: Sequence[Run],
    labels: dict[Path, tuple[np.ndarray, ...]],
    draws: dict[tuple[str, ...], np.ndarray],
    split_draws: dict[SplitKey, np.ndarray],
    num_classes: int,
    rng: np.random.Generator,
) -> _Samples:
    """Per-run and per-resample F1 of one approach's runs on one task.

    A three-level bootstrap: each resample draws the splits with replacement (the same
    draws for every approach on the same splits, which pairs them), and within each split
    its seeds and test images (``seed_averaged_f1``); the drawn splits are averaged.
    """
    key = _split_key(group)
    per_split, means = [], {}
    for paths in key:
        runs = [r for r in group if r.predictions.paths == paths]
        pairs = [labels[r.directory] for r in runs]
        indices = [draws[paths]] * len(runs)
        per_split.append(seed_averaged_f1(pairs, indices, num_classes, rng))
        means[paths] = float(np.mean([batched_macro_f1(p, t, num_classes)[0] for p, t in pairs]))
    drawn = split_draws[key]
    resampled = np.stack(per_split)[drawn, np.arange(drawn.shape[0])[:, None]].mean(axis=1)
    per_run = np.array([batched_macro_f1(*labels[r.directory], num_classes)[0] for r in group])
    return _Samples(per_run, resampled, key, means)


def _task_scores(
    samples: dict[str, _Samples], best: str, probe: str | None
) -> dict[str, TaskScore]:
    """Every row of one task against the best (and the probe): paired bootstrap p-values,
    Holm-adjusted over the rows compared; CI overlap where the test images differ."""
    paired = [n for n in samples if n != best and samples[n].splits == samples[best].splits]
    tests = [paired_comparison(samples[best].resampled, samples[n].resampled) for n in paired]
    comparisons = dict(zip(paired, tests, strict=True))
    adjusted = dict(zip(paired, holm_adjust([c.p_value for c in tests]), strict=True))
    versus = _versus_probe(samples, probe)
    scores = {}
    for name, s in samples.items():
        interval = percentile_interval(s.resampled)
        if name == best:
            mark = BEST
        elif name in comparisons:
            mark = WORSE if adjusted[name] <= ALPHA else SAME
        else:
            overlap = intervals_overlap(interval, percentile_interval(samples[best].resampled))
            mark = SAME if overlap else WORSE
        std = float(np.std(s.per_seed, ddof=1)) if len(s.per_seed) > 1 else None
        scores[name] = TaskScore(
            float(s.per_seed.mean()),
            std,
            *interval,
            mark,
            fallback=name != best and name not in comparisons,
            comparison=comparisons.get(name),
            p_holm=adjusted.get(name),
            vs_probe=versus.get(name),
        )
    return scores


def _versus_probe(samples: dict[str, _Samples], probe: str | None) -> dict[str, VersusProbe]:
    """(row − probe) for every row on the probe's splits, Holm-adjusted over those rows."""
    if probe is None or probe not in samples:
        return {}
    base = samples[probe]
    names = [n for n in samples if n != probe and samples[n].splits == base.splits]
    diffs = [samples[n].resampled - base.resampled for n in names]
    adjusted = holm_adjust([bootstrap_p_value(d) for d in diffs])
    out = {}
    for name, diff, p in zip(names, diffs, adjusted, strict=True):
        observed = float(samples[name].per_seed.mean() - base.per_seed.mean())
        verdict = SAME_AS_PROBE if p > ALPHA else ABOVE_PROBE if observed > 0 else BELOW_PROBE
        out[name] = VersusProbe(observed, *percentile_interval(diff), p, verdict)
    return out


def _firsts(samples: dict[str, _Samples]) -> dict[str, int]:
    """On each split that every row ran on, which row has the highest mean F1: counts."""
    common = set.intersection(*(set(s.split_means) for s in samples.values()))
    counts = dict.fromkeys(samples, 0)
    for paths in common:
        counts[max(samples, key=lambda name: samples[name].split_means[paths])] += 1
    return counts


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


_RANKING_NAMES = {
    "val/landmark_f1": "validation landmark macro F1",
    "val/f1": "validation macro F1 (mean of the tasks)",
}


def summarise(runs: Sequence[Run], bootstrap: int = 2000, seed: int = 0) -> Table:
    """One row per approach (or sweep point), best first: ranked by the validation score
    of :func:`ranking_monitor` when every run recorded it (choosing on test scores would
    flatter the winner), else by test landmark macro F1."""
    if not runs:
        raise ValueError("no runs to summarise")
    groups = row_groups(runs)
    rng = np.random.default_rng(seed)
    strata = {r.predictions.paths: r.predictions.true["landmark"] for r in runs}
    path_sets = sorted(strata, key=lambda p: (len(p), p))
    draws = {p: resample_indices(strata[p], bootstrap, rng) for p in path_sets}
    split_keys = sorted({_split_key(group) for group in groups.values()})
    split_draws = {k: rng.integers(0, len(k), size=(bootstrap, len(k))) for k in split_keys}
    probe = PROBE if PROBE in groups else None
    scores: dict[str, dict[str, TaskScore]] = {name: {} for name in groups}
    firsts: dict[str, int] = {}
    for task in TASKS:
        labels, num_classes = _encode(runs, task)
        samples = {
            name: _samples(group, labels, draws, split_draws, num_classes, rng)
            for name, group in groups.items()
        }
        best = max(samples, key=lambda name: samples[name].per_seed.mean())
        for name, score in _task_scores(samples, best, probe).items():
            scores[name][task] = score
        if task == "landmark":
            firsts = _firsts(samples)
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
            first_in=firsts[name] if len(path_sets) > 1 else None,
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
        splits=len(path_sets),
        probe=probe,
        mistakes=summarise_mistakes(groups, probe, bootstrap, seed),
        recommendation=recommend(rows, groups, probe),
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


def _versus_probe_cell(score: TaskScore, is_probe: bool) -> str:
    versus = score.vs_probe
    if is_probe or versus is None:
        return "—"
    return f"{versus.diff:+.3f} [{versus.diff_low:+.3f}, {versus.diff_high:+.3f}] {versus.verdict}"


def _markdown_cells(row: ApproachRow, table: Table) -> list[str]:
    cells = [row.approach.replace("|", "\\|"), str(len(row.seeds))]
    for task in TASKS:
        s = row.scores[task]
        std = "—" if s.std is None else f"{s.std:.3f}"
        cells += [f"{s.mean:.3f} ± {std}", f"[{s.ci_low:.3f}, {s.ci_high:.3f}]", _versus_best(s)]
        if table.probe is not None:
            cells.append(_versus_probe_cell(s, row.approach == table.probe))
    if table.splits > 1:
        cells.append(f"{row.first_in}/{table.splits}")
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


def markdown_table(table: Table, skipped: Sequence[str] = (), read: Sequence[str] = ()) -> str:
    """Table 1 as Markdown: a header line, the table, a legend, any skipped runs and what
    the report read (``read``: Markdown lines, see :meth:`Inventory.read_lines`)."""
    runs = sum(len(row.seeds) for row in table.rows)
    roots = ", ".join(f"`{printable(root)}`" for root in table.roots)
    images = "/".join(map(str, table.test_images))
    approaches = _count(len(table.rows), "approach", "approaches")
    header = ["Approach", "Runs" if table.splits > 1 else "Seeds"]
    align = "|---|--:|"
    for task in TASKS:
        header += [f"{task.capitalize()} F1", "95% CI", "vs best"]
        align += "--:|--:|---|"
        if table.probe is not None:
            header.append("vs linear probe")
            align += "---|"
    if table.splits > 1:
        header.append("First on")
        align += "--:|"
    header += ["Val landmark F1", "Full-path acc.", "Consistency", "Train s"]
    splits = f" over {table.splits} splits" if table.splits > 1 else ""
    lines = [
        "# Table 1: approaches compared",
        "",
        f"{_count(runs, 'run', 'runs')} of {approaches}{splits} on {roots}; {images} test "
        f"images; bootstrap B = {table.bootstrap} (seed {table.seed}).",
        *_best_line(table),
        "",
        "| " + " | ".join(header) + " |",
        align + "--:|--:|--:|--:|",
        *("| " + " | ".join(_markdown_cells(row, table)) + " |" for row in table.rows),
        "",
        *_legend(table, len(table.rows)),
        *recommendation_lines(table.recommendation),
        *mistakes_markdown(
            [row.approach for row in table.rows],
            table.mistakes,
            {row.approach: row.scores["landmark"].mean for row in table.rows},
        ),
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
    if read:
        lines += ["", "## What was read", "", *read]
    return "\n".join(lines) + "\n"


def _legend(table: Table, rows: int) -> list[str]:
    """What the columns mean, the levels resampled, and the multiplicity corrected for."""
    levels = "test images (resampled within each landmark, the same draws for every approach) "
    levels += "and seeds (with replacement), the drawn seeds averaged"
    if table.splits > 1:
        levels = (
            "splits (with replacement, the same draws for every approach), then within each "
            f"split {levels}; the drawn splits averaged"
        )
    compared = max(rows - 1, 1)
    spread = "runs" if table.splits > 1 else "seeds"
    lines = [
        f"Rows are ranked by {table.ranked_by or 'test landmark macro F1 (no validation score)'}"
        " (strategy.monitor when it is a score). "
        f"F1: macro F1 on the test images, mean ± std over {spread} (— with one). "
        f"95% CI: percentile bootstrap over {levels}. "
        f"vs best: **{BEST}** = highest mean F1 of the task; **{SAME}** = not distinguishable "
        f"from the best, **{WORSE}** = distinguishable (paired bootstrap, two-sided, "
        f"Holm-corrected). In parentheses: share of resamples in which the approach scores "
        "at least the best's F1.",
        "",
        f"Multiplicity: {rows} rows compared per task, so each verdict column is one family "
        f"of {compared} paired tests; **Holm's step-down correction** holds the family-wise "
        f"error at {ALPHA:.0%} per task and column (uncorrected intervals are shown).",
    ]
    if table.probe is not None:
        lines += [
            "",
            f"vs linear probe: difference of mean F1 to the `{table.probe}` row (row − probe) "
            f"and its paired bootstrap 95% CI; **{ABOVE_PROBE}** / **{BELOW_PROBE}** where the "
            "paired test, Holm-corrected over the rows compared with the probe, finds a "
            f"difference; **{SAME_AS_PROBE}** where it does not.",
        ]
    if table.splits > 1:
        lines += [
            "",
            f"First on: on how many of the {table.splits} splits the row has the highest mean "
            "test landmark F1; a ranking that changes with the split shows here.",
        ]
    return lines


def _csv_header() -> list[str]:
    fields = ["mean", "std", "ci_low", "ci_high", "mark", "fallback"]
    fields += ["diff_ci_low", "diff_ci_high", "share_at_least_best", "p_holm"]
    fields += ["vs_probe_diff", "vs_probe_ci_low", "vs_probe_ci_high", "vs_probe_p_holm"]
    per_task = [f"{task}_f1_{field}" for task in TASKS for field in fields]
    rest = ["first_on_splits", "val_landmark_f1", "full_path_accuracy", "consistency", "train_s"]
    # the report's recommendation: 1 on the chosen row (0 on the others, empty without one)
    # and, on that row, on how many of the probe's splits it is above the probe
    rest += ["recommended", "recommended_splits_above_probe", *mistakes_csv_header()]
    return ["approach", "runs", "seeds", *per_task, *rest]


def _csv_cells(row: ApproachRow, table: Table) -> list[Any]:
    cells: list[Any] = [row.approach, len(row.seeds), " ".join(map(str, row.seeds))]
    for task in TASKS:
        s, c, v = row.scores[task], row.scores[task].comparison, row.scores[task].vs_probe
        cells += [s.mean, s.std, s.ci_low, s.ci_high, s.mark, int(s.fallback)]
        cells += (
            [None, None, None] if c is None else [c.diff_low, c.diff_high, c.share_at_least_best]
        )
        cells.append(s.p_holm)
        cells += [None] * 4 if v is None else [v.diff, v.diff_low, v.diff_high, v.p_holm]
    cells += [row.first_in, row.val_landmark_f1, row.full_path_accuracy, row.consistency]
    cells.append(row.train_seconds)
    rec = table.recommendation
    chosen = rec is not None and rec.approach == row.approach
    cells += [None if rec is None else int(chosen), f"{rec.wins}/{rec.splits}" if chosen else None]
    cells += mistakes_csv_cells(table.mistakes.get(row.approach))
    return ["" if cell is None else cell for cell in cells]


def csv_table(table: Table) -> str:
    """Table 1 as CSV, one column per number, for machines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_csv_header())
    writer.writerows(_csv_cells(row, table) for row in table.rows)
    return out.getvalue()


def write_report(
    table: Table, out_dir: str | Path, skipped: Sequence[str] = (), read: Sequence[str] = ()
) -> dict[str, Path]:
    """Write table1.md, table1.csv, table1.tex and the bar chart table1.png into ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "markdown": atomic_write_text(out_dir / "table1.md", markdown_table(table, skipped, read)),
        "csv": atomic_write_text(out_dir / "table1.csv", csv_table(table)),
        "latex": atomic_write_text(out_dir / "table1.tex", latex_table(table)),
        "png": save_png(table_figure(table), out_dir / "table1.png"),
    }


def table_figure(table: Table) -> Figure:
    """Grouped bars of each task's mean F1 with its 95% interval, one group per row."""
    labels = [row.approach for row in table.rows]
    series = {
        task: tuple(
            [getattr(row.scores[task], field) for row in table.rows]
            for field in ("mean", "ci_low", "ci_high")
        )
        for task in TASKS
    }
    title = f"Macro F1 by approach (bootstrap B = {table.bootstrap})"
    return bar_chart_figure(labels, series, title)


@dataclass
class ReportArgs:
    """The keys of ``landmark-tl report`` (documented in conf/report.yaml)."""

    runs: Any = MISSING  # a dir, or a list of them
    out: str | None = None  # default: <first of runs>-report, beside it
    study: str | None = None  # a study id (or its start), or all; None: the only study
    bootstrap: int = 2000
    seed: int = 0
    run_plots: bool = False  # draw each run's missing plots/ (runs with extras.plots=false)
    html: bool = True  # report.html and one page per run (runs/<name>.html)


ConfigStore.instance().store(name="report_schema", node=ReportArgs)


def default_out(inputs: Sequence[Path]) -> Path:
    """``<first input>-report`` beside the first input: never inside what is read."""
    first = inputs[0].resolve()
    base = first if first.is_dir() else first.parent
    return base.parent / f"{base.name}-report"


def _warn_not_scored(inventory: Inventory) -> None:
    for items in inventory.not_scored.values():
        for item in items:
            print(f"warning: {item}", file=sys.stderr)
