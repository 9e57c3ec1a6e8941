"""Table 1 rendered: Markdown (with its legend), CSV, the bar chart, and the files of a
report (``table1.md``, ``table1.csv``, ``table1.tex``, ``table1.png``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from landmark_tl.core.io import atomic_write_text, printable
from landmark_tl.reporting.mistakes import (
    mistakes_csv_cells,
    mistakes_csv_header,
    mistakes_markdown,
)
from landmark_tl.reporting.plots import bar_chart_figure, save_png
from landmark_tl.reporting.recommendation import recommendation_lines
from landmark_tl.reporting.report_latex import latex_table
from landmark_tl.reporting.table import (
    ABOVE_PROBE,
    ALPHA,
    BELOW_PROBE,
    BEST,
    SAME,
    SAME_AS_PROBE,
    WORSE,
    ApproachRow,
    Table,
    TaskScore,
)
from landmark_tl.runs.rundir import TASKS

UNPAIRED = "†"  # marks a verdict by CI overlap (the test images differ from the best's)


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
        *mistakes_markdown(table.rows, table.mistakes),
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
