"""Self-contained HTML pages: one per run and one per comparison (``report.html``).

Each page is one file: figures and thumbnails embedded as base64 ``data:`` URIs, CSS
inline, no script and nothing fetched, so it opens offline, by mail or as a tracker
artifact. The pages are built from small escaped fragments with the standard library's
``html.escape``: a template engine would add a template folder for the same few tags.

A run page holds the run's test and validation scores, every further section of its
metrics.json (hierarchy metrics, mistake severity, frequency buckets, ...: rendered
generically, whatever their names), the curves of the monitored score, the normalised
confusion matrices with category blocks, per-landmark F1 and a gallery of misclassified
test images with their top predictions. A comparison page holds the table with intervals
and verdicts, the bar chart, the recommendation, the hierarchy-aware scores (mistake
severity, distance@k), per-split results, what was read, and links to run pages.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from landmark_tl.core.io import atomic_write_text, printable
from landmark_tl.evaluation.metrics import macro_f1
from landmark_tl.reporting.mistakes import MISTAKES_HEADING, MISTAKES_NOTE, mistakes_rows
from landmark_tl.reporting.plots import DPI, confusion_figures, curves_figures, read_hierarchy
from landmark_tl.reporting.recommendation import recommendation_lines
from landmark_tl.reporting.render import (
    UNPAIRED,
    _legend,
    _number,
    _versus_best,
    _versus_probe_cell,
    table_figure,
)
from landmark_tl.reporting.studies import SEED_KEYS, row_groups, run_settings
from landmark_tl.reporting.table import Table
from landmark_tl.runs.rundir import TASKS, Run, read_json, read_text

GALLERY_MAX = 24  # misclassified images shown, most confident mistakes first
THUMBNAIL_PX = 128
# metrics.json sections the run page shows in its own way, or that hold no scores.
_OWN_SECTIONS = {"test", "val", "data", "stages", "timings", "provenance", "overrides"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
img.fig{max-width:100%;display:block;margin:.5em 0}
.bar{background:#f39c34;height:.8em;display:inline-block}
.gallery{display:flex;flex-wrap:wrap;gap:.8em}
.gallery figure{margin:0;width:180px;font-size:.8em}
.gallery img{width:128px;height:128px;object-fit:contain;background:#eee}
.missing{width:128px;height:128px;background:#eee;display:flex;align-items:center;
justify-content:center;color:#777}
.best{font-weight:bold}.note{color:#555;font-size:.9em}
"""


def esc(value: Any) -> str:
    """Text safe inside HTML (undecodable file-name bytes shown escaped)."""
    return html.escape(printable(str(value)))


def figure_uri(fig: Figure) -> str:
    """A matplotlib figure as a PNG ``data:`` URI."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_img(fig: Figure, alt: str) -> str:
    return f'<img class="fig" alt="{esc(alt)}" src="{figure_uri(fig)}">'


def thumbnail_uri(path: Path, size: int = THUMBNAIL_PX) -> str | None:
    """A JPEG thumbnail of the image at ``path`` as a ``data:`` URI; None when it is gone
    or unreadable (the gallery says so instead)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _markdown_line(line: str) -> str:
    """One line of the report's Markdown as HTML: escaped, ``**bold**`` and ``code``."""
    text = esc(line)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_block(lines: Sequence[str]) -> str:
    """Paragraphs and ``- `` lists of simple Markdown lines as HTML."""
    parts: list[str] = []
    items: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("- "):
            items.append(f"<li>{_markdown_line(line[2:])}</li>")
            continue
        if items:
            parts.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.startswith("## "):
            parts.append(f"<h2>{_markdown_line(line[3:])}</h2>")
        elif line:
            parts.append(f"<p>{_markdown_line(line)}</p>")
    return "\n".join(parts)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A table; the first ``left`` columns are left-aligned, cells are escaped unless they
    are already markup (:class:`Markup`)."""

    def cell(tag: str, i: int, value: Any) -> str:
        align = ' class="l"' if i < left else ""
        body = value.html if isinstance(value, Markup) else esc("" if value is None else value)
        return f"<{tag}{align}>{body}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup:
    """A table cell that is already HTML."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def page(title: str, body: str) -> str:
    """A whole HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_format(v) for v in value)
    return str(value)


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        return [
            item
            for key, inner in value.items()
            for item in _flat(inner, f"{prefix}.{key}" if prefix else str(key))
        ]
    return [(prefix, value)]


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _records_table(records: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for record in records for k in record))
    return html_table(columns, [[_format(r.get(c, "")) for c in columns] for r in records])


def generic_section(name: str, value: Any) -> str:
    """Any metrics.json section as a heading and a key → value table (nested keys dotted);
    a list of records (e.g. severity per level), at any depth, as a table of its own with
    the records' keys as columns."""
    if _is_records(value):
        return f"<h3>{esc(name)}</h3>" + _records_table(value)
    items = _flat(value)
    rows = [[key or name, _format(v)] for key, v in items if not _is_records(v)]
    parts = [f"<h3>{esc(name)}</h3>", html_table(["key", "value"], rows) if rows else ""]
    parts += [
        f"<h4>{esc(f'{name}.{key}')}</h4>" + _records_table(v) for key, v in items if _is_records(v)
    ]
    return "".join(parts)


def scores_section(metrics: Mapping[str, Any]) -> str:
    """Test and validation scores of each task, one row per (split, task)."""
    rows = []
    keys: list[str] = []
    for split in ("test", "val"):
        for task, scores in metrics.get(split, {}).items():
            if isinstance(scores, Mapping):
                keys += [k for k in scores if k not in keys]
                rows.append((split, task, scores))
    table = [[split, task, *(_format(s.get(k, "")) for k in keys)] for split, task, s in rows]
    return html_table(["split", "task", *keys], table, left=2)


def per_landmark_f1(
    true: Sequence[str], pred: Sequence[str], names: Sequence[str]
) -> list[tuple[str, int, float, float, float]]:
    """(landmark, test images, precision, recall, F1) of every landmark among the labels
    (in ``names`` order, then the others), F1 lowest first (the ones to look at);
    torchmetrics' per-class scores."""
    labels = list(dict.fromkeys([*names, *sorted(set(true) | set(pred))]))
    index = {name: i for i, name in enumerate(labels)}
    t = torch.tensor([index[n] for n in true])
    p = torch.tensor([index[n] for n in pred])
    k = len(labels)
    per_class = [
        score(p, t, k, average="none").tolist()
        for score in (multiclass_precision, multiclass_recall, multiclass_f1_score)
    ]
    support = torch.bincount(t, minlength=k).tolist()
    predicted = torch.bincount(p, minlength=k).tolist()
    rows = [
        (name, support[i], per_class[0][i], per_class[1][i], per_class[2][i])
        for i, name in enumerate(labels)
        if support[i] or predicted[i]
    ]
    return sorted(rows, key=lambda row: (row[4], row[0]))


def _bar(value: float) -> Markup:
    width = max(0.0, min(value, 1.0)) * 120
    return Markup(f'<span class="bar" style="width:{width:.0f}px"></span> {value:.3f}')


def _predictions_rows(run_dir: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(read_text(run_dir / "predictions.csv"))))
    except (OSError, csv.Error):
        return []


def gallery_section(run_dir: Path, metrics: Mapping[str, Any]) -> str:
    """Misclassified test images (landmark task), most confident mistakes first, each with
    a thumbnail (from ``data.root`` and the path that predictions.csv and split.csv give)
    and its top predictions (``landmark_top<k>`` columns; the top one for older runs)."""
    rows = [
        r for r in _predictions_rows(run_dir) if r.get("true_landmark") != r.get("pred_landmark")
    ]
    if not rows:
        return "<p>No misclassified test image.</p>"
    rows.sort(key=lambda r: -float(r.get("prob_landmark") or 0.0))
    root = Path(str(metrics.get("data", {}).get("root", "")))
    figures = []
    for row in rows[:GALLERY_MAX]:
        path = Path(row["path"])
        uri = thumbnail_uri(path if path.is_absolute() else root / path)
        image = (
            f'<img alt="{esc(row["path"])}" src="{uri}">'
            if uri
            else '<div class="missing">image not found</div>'
        )
        tops = [row[k] for k in sorted(row) if k.startswith("landmark_top") and row[k]]
        tops = tops or [f"{row['pred_landmark']} ({float(row['prob_landmark']):.3f})"]
        items = "".join(f"<li>{esc(top)}</li>" for top in tops)
        figures.append(
            f"<figure>{image}<figcaption><code>{esc(row['path'])}</code><br>"
            f"true: <b>{esc(row['true_landmark'])}</b><ol>{items}</ol></figcaption></figure>"
        )
    shown = f"{min(len(rows), GALLERY_MAX)} of {len(rows)}"
    return (
        f'<p class="note">{shown} misclassified test images, most confident first; '
        "under each, its top predictions with their probabilities.</p>"
        f'<div class="gallery">{"".join(figures)}</div>'
    )


def run_body(run_dir: Path, metrics: Mapping[str, Any]) -> str:
    """The sections of a run page (see the module docstring)."""
    data = metrics.get("data", {})
    stages = metrics.get("stages", [])
    parts = [
        f"<p>Run dir <code>{esc(run_dir)}</code>; backbone <b>{esc(metrics.get('backbone'))}"
        f"</b>; data {esc(data.get('source', '?'))} <code>{esc(data.get('root', '?'))}</code>"
        f" ({esc(data.get('images', '?'))} images, split {esc(data.get('split', '?'))}); seed "
        f"{esc(metrics.get('seed'))}; {esc(metrics.get('validation', ''))}.</p>",
        "<h2>Scores</h2>",
        scores_section(metrics),
    ]
    if stages:
        columns = ["name", "epochs", "monitor", "best_score", "seconds"]
        rows = [[_format(s.get(c, "")) for c in columns] for s in stages]
        parts += ["<h2>Stages</h2>", html_table(columns, rows)]
    extra = {k: v for k, v in metrics.items() if k not in _OWN_SECTIONS}
    extra = {k: v for k, v in extra.items() if isinstance(v, (Mapping, list)) and v}
    if extra:
        parts.append("<h2>Further metrics</h2>")
        parts += [generic_section(name, value) for name, value in extra.items()]
    curves = curves_figures(run_dir)
    if curves:
        parts.append("<h2>Learning curves of the monitored score</h2>")
        parts += [figure_img(fig, f"curves of stage {stage}") for stage, fig in curves.items()]
    confusions = confusion_figures(run_dir)
    if confusions:
        parts.append("<h2>Confusion matrices</h2>")
        parts += [figure_img(fig, f"confusion matrix {task}") for task, fig in confusions.items()]
    rows = _predictions_rows(run_dir)
    if rows and "true_landmark" in rows[0]:
        hierarchy = read_hierarchy(run_dir)
        names = hierarchy.landmark_names if hierarchy is not None else []
        true = [r["true_landmark"] for r in rows]
        scores = per_landmark_f1(true, [r["pred_landmark"] for r in rows], names)
        table = [[name, n, _bar(p), _bar(r), _bar(f1)] for name, n, p, r, f1 in scores]
        parts += [
            "<h2>Per-landmark F1 (lowest first)</h2>",
            html_table(["landmark", "test images", "precision", "recall", "F1"], table),
        ]
    parts += ["<h2>Misclassified test images</h2>", gallery_section(run_dir, metrics)]
    provenance = metrics.get("provenance")
    if provenance:
        parts += ["<h2>Provenance</h2>", generic_section("provenance", provenance)]
    return "\n".join(parts)


def run_page(run_dir: Path, metrics: Mapping[str, Any] | None = None) -> str:
    """The HTML page of one run (``metrics``: its metrics.json, read when not given)."""
    metrics = read_json(run_dir / "metrics.json") if metrics is None else metrics
    title = f"{metrics.get('approach', run_dir.name)} on {metrics.get('backbone', '?')}"
    return page(title, run_body(run_dir, metrics))


def write_run_page(run_dir: str | Path, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.html`` into a run dir."""
    run_dir = Path(run_dir)
    return atomic_write_text(run_dir / "report.html", run_page(run_dir, metrics))


def _comparison_rows(table: Table, links: Mapping[str, list[str]]) -> list[list[Any]]:
    rows = []
    for row in table.rows:
        runs = " ".join(
            f'<a href="{esc(href)}">{i + 1}</a>' for i, href in enumerate(links[row.approach])
        )
        cells: list[Any] = [row.approach, Markup(runs)]
        for task in TASKS:
            score = row.scores[task]
            std = "" if score.std is None else f" ± {score.std:.3f}"
            mean = f"{score.mean:.3f}{std}"
            cells += [
                Markup(f'<span class="best">{esc(mean)}</span>') if score.mark == "best" else mean,
                f"[{score.ci_low:.3f}, {score.ci_high:.3f}]",
                _versus_best(score),
            ]
            if table.probe is not None:
                cells.append(_versus_probe_cell(score, row.approach == table.probe))
        cells += [
            _number(row.val_ranking),
            _number(row.full_path_accuracy),
            _number(row.train_seconds, 1),
        ]
        rows.append(cells)
    return rows


def _comparison_header(table: Table) -> list[str]:
    header = ["Approach", "Runs"]
    for task in TASKS:
        header += [f"{task.capitalize()} F1", "95% CI", "vs best"]
        if table.probe is not None:
            header.append("vs linear probe")
    return header + ["Val score", "Full-path acc.", "Train s"]


def mistakes_section(table: Table) -> str:
    """The hierarchy-aware scores beside landmark macro F1, as in table1.md; empty when no
    run recorded them."""
    if not table.mistakes:
        return ""
    header, rows = mistakes_rows(table.rows, table.mistakes)
    return (
        f"<h2>{esc(MISTAKES_HEADING)}</h2>"
        + html_table(header, rows)
        + f'<p class="note">{esc(MISTAKES_NOTE)}</p>'
    )


def _split_label(runs: Sequence[Run], index: int) -> str:
    seeds = {run_settings(r).get(SEED_KEYS[1]) for r in runs}
    return (
        f"split seed {seeds.pop()}"
        if len(seeds) == 1 and None not in seeds
        else f"split {index + 1}"
    )


def split_section(table: Table, groups: Mapping[str, list[Run]]) -> str:
    """Mean test macro F1 of each row on each split (its seeds averaged), per task."""
    all_runs = [r for runs in groups.values() for r in runs]
    splits = sorted({r.predictions.paths for r in all_runs}, key=lambda p: (len(p), p))
    labels = [
        _split_label([r for r in all_runs if r.predictions.paths == p], i)
        for i, p in enumerate(splits)
    ]
    rows = []
    for row in table.rows:
        cells: list[Any] = [row.approach]
        for task in TASKS:
            for paths in splits:
                scores = [
                    _run_f1(r, task) for r in groups[row.approach] if r.predictions.paths == paths
                ]
                cells.append(f"{np.mean(scores):.3f}" if scores else "—")
        rows.append(cells)
    header = ["Approach", *(f"{task} F1, {label}" for task in TASKS for label in labels)]
    note = (
        f'<p class="note">{len(splits)} split(s) (test sets); mean test macro F1 of each '
        "row's runs on each split.</p>"
    )
    return note + html_table(header, rows)


def _run_f1(run: Run, task: str) -> float:
    """Test macro F1 of one run on one task, from its predictions."""
    true, pred = run.predictions.true[task], run.predictions.pred[task]
    index = {n: i for i, n in enumerate(sorted(set(true) | set(pred)))}
    return macro_f1([index[n] for n in pred], [index[n] for n in true], len(index))


def _page_name(run: Run, common: Path) -> str:
    try:
        relative = run.directory.relative_to(common)
    except ValueError:
        relative = Path(run.directory.name)
    if relative == Path("."):
        relative = Path(run.directory.name)
    return "runs/" + (re.sub(r"[^A-Za-z0-9._-]+", "_", str(relative)) or "run") + ".html"


def write_comparison_pages(
    table: Table, runs: Sequence[Run], out_dir: str | Path, read: Sequence[str] = ()
) -> dict[str, Path]:
    """Write ``report.html`` (the comparison) and ``runs/<run>.html`` (one page per run: a
    copy of the run's own report.html, drawn here for runs without one) into ``out_dir``;
    returns the comparison page's path under ``html``."""
    out_dir = Path(out_dir)
    groups = row_groups(runs)
    common = Path(*_common_parts([r.directory for r in runs]))
    links: dict[str, list[str]] = {}
    for name, members in groups.items():
        for run in members:
            href = _page_name(run, common)
            own = run.directory / "report.html"  # written by the run: copied, not redrawn
            text = read_text(own) if own.is_file() else run_page(run.directory, run.metrics)
            atomic_write_text(out_dir / href, text)
            links.setdefault(name, []).append(href)
    fallback = any(s.fallback for row in table.rows for s in row.scores.values())
    body = [
        "<h2>Table 1</h2>",
        html_table(_comparison_header(table), _comparison_rows(table, links)),
        markdown_block(_legend(table, len(table.rows))),
        f'<p class="note">{UNPAIRED} test images differ from the best\'s: compared by '
        "overlap of the two 95% CIs.</p>"
        if fallback
        else "",
        figure_img(table_figure(table), "macro F1 by approach"),
        markdown_block(recommendation_lines(table.recommendation)),
        mistakes_section(table),
        "<h2>Per-split results</h2>",
        split_section(table, groups),
        markdown_block(["## What was read", *read]),
    ]
    title = "Approaches compared" + (f" — ranked by {table.ranked_by}" if table.ranked_by else "")
    page_path = atomic_write_text(out_dir / "report.html", page(title, "\n".join(body)))
    return {"html": page_path}


def _common_parts(paths: Sequence[Path]) -> tuple[str, ...]:
    parts = [p.parts for p in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return tuple(common) or ("/",)
