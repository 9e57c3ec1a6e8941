"""Figures of a run (learning curves, confusion matrices) and of a comparison (bar chart).

Above :data:`MATRIX_MAX_CLASSES` classes a k×k confusion matrix is unreadable (and 10⁸
cells at 10k landmarks), so the run's plot shows its most-confused pairs instead.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.core.io import atomic_write_bytes, printable
from landmark_tl.evaluation.metrics import macro_f1
from landmark_tl.evaluation.registry import label_of
from landmark_tl.runs.rundir import (
    TASKS,
    MalformedRunError,
    read_epoch_metrics,
    read_json,
    read_predictions,
)

log = logging.getLogger(__name__)

DPI = 120
ANNOTATE_MAX_CLASSES = 30
MATRIX_MAX_CLASSES = 50
CONFUSED_PAIRS = 20
TASK_COLORS = {"category": "tab:blue", "landmark": "tab:orange"}


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to PNG bytes and write them atomically."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def _plot_series(ax: Axes, series: Mapping[int, float], label: str, **style: Any) -> None:
    epochs = sorted(series)
    ax.plot(epochs, [series[e] for e in epochs], label=label, marker="o", markersize=3, **style)


def split_revalidation(
    series: Mapping[str, Mapping[int, float]],
) -> tuple[dict[str, dict[int, float]], int | None]:
    """Take out the re-validation of the chosen checkpoint and say which epoch it was.

    After a stage's fit its best checkpoint is validated once more; the logger files that
    as val values of one epoch past the last trained epoch. That row is no epoch of
    training: it is dropped, and the chosen epoch is the trained epoch whose validation
    loss it repeats (whatever the checkpoint was chosen on). None when there is no such row.
    """
    kept = {key: dict(values) for key, values in series.items()}
    trained = set(kept.get("train/loss", {}))
    val_loss = kept.get("val/loss", {})
    extra = [e for e in val_loss if trained and e > max(trained)]
    if not extra:
        return kept, None
    again = val_loss[max(extra)]
    for key in kept:
        if key.startswith("val/"):
            for epoch in extra:
                kept[key].pop(epoch, None)
    candidates = [e for e in kept["val/loss"] if e in trained]
    if not candidates:
        return kept, None
    return kept, min(candidates, key=lambda e: (abs(kept["val/loss"][e] - again), e))


def monitored_quantity(monitor: str) -> str:
    """The score family a monitor names (``val/f1``, ``val/landmark_f1`` → ``f1``;
    ``val/category_acc`` → ``acc``); macro F1 for a loss, which has its own panel."""
    name = monitor.removeprefix("val/").rpartition("_")[2] if "_" in monitor else monitor
    name = name.removeprefix("val/")
    return "f1" if name == "loss" else name


def curves_figure(
    stage: str, series: Mapping[str, Mapping[int, float]], monitor: str = "val/f1"
) -> Figure:
    """Loss and the monitored score (``strategy.monitor``: macro F1 by default) per epoch,
    train (solid) and val (dashed), of one training stage: each task's and, in black, their
    mean; a dotted line marks the epoch whose checkpoint was chosen (and tested)."""
    series, chosen = split_revalidation(series)
    quantity = monitored_quantity(monitor)
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, score_ax = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("val", "--")):
        if f"{split}/loss" in series:
            _plot_series(loss_ax, series[f"{split}/loss"], f"{split} loss", linestyle=style)
        for task in TASKS:
            if f"{split}/{task}_{quantity}" in series:
                _plot_series(
                    score_ax,
                    series[f"{split}/{task}_{quantity}"],
                    f"{split} {task}",
                    linestyle=style,
                    color=TASK_COLORS[task],
                )
        if f"{split}/{quantity}" in series:
            _plot_series(
                score_ax, series[f"{split}/{quantity}"], f"{split} mean", linestyle=style, color="k"
            )
    name = label_of(quantity)
    for ax, title in ((loss_ax, "loss"), (score_ax, f"{name} (monitor {monitor})")):
        if chosen is not None:
            ax.axvline(chosen, color="black", linestyle=":", label=f"chosen (epoch {chosen})")
        ax.set_title(f"Stage '{stage}': {title}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title.partition(" (")[0])
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.has_data():
            ax.legend(fontsize=8)
    score_ax.set_ylim(0.0, 1.02)
    return fig


def confusion_matrix(
    true_names: Sequence[str], pred_names: Sequence[str], class_names: Sequence[str]
) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class, in ``class_names`` order."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted((set(true_names) | set(pred_names)) - set(index))
    if unknown:
        raise ValueError(f"labels not among the class names: {unknown[:5]}")
    k = len(class_names)
    cells = [index[t] * k + index[p] for t, p in zip(true_names, pred_names, strict=True)]
    return np.bincount(np.asarray(cells, dtype=np.int64), minlength=k * k).reshape(k, k)


def confusion_figure(
    task: str,
    matrix: np.ndarray,
    class_names: Sequence[str],
    blocks: Sequence[tuple[str, int]] = (),
) -> Figure:
    """Heat map of a row-normalised confusion matrix (each true class's images sum to 1;
    cells show the share in %), titled with the task's macro F1 and accuracy; ``blocks``
    ((category, landmarks), in order) frames each category's landmarks."""
    k = len(class_names)
    rows, cols = np.nonzero(matrix)
    counts = matrix[rows, cols]
    targets, preds = np.repeat(rows, counts), np.repeat(cols, counts)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(4.0 + 0.22 * k, 14.0)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", interpolation="nearest", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's test images")
    font = 8 if k <= 12 else 6
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(k), class_names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"Confusion matrix: {task}, normalised by true class (%)\nmacro F1 "
        f"{macro_f1(preds, targets, k):.3f}, accuracy {accuracy:.3f} (n={matrix.sum()})",
        fontsize=10,
    )
    start = 0
    for _, size in blocks:  # category blocks: a frame around each category's landmarks
        ax.add_patch(
            Rectangle((start - 0.5, start - 0.5), size, size, fill=False, edgecolor="tab:red")
        )
        start += size
    if k <= ANNOTATE_MAX_CLASSES:
        for r, c in zip(rows, cols, strict=True):
            color = "white" if shares[r, c] > 0.5 else "black"
            text = f"{100 * shares[r, c]:.0f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=font, color=color)
    return fig


def category_ordered(
    hierarchy: LabelHierarchy | None, extra: Sequence[str] = ()
) -> tuple[list[str], list[tuple[str, int]]]:
    """Landmark names grouped by category (categories in the hierarchy's order) and the
    (category, landmarks) blocks; ``extra`` names (not in the hierarchy) go last, unframed."""
    if hierarchy is None:
        return list(extra), []
    names, blocks = [], []
    for c, category in enumerate(hierarchy.categories):
        members = [
            name
            for name, parent in zip(
                hierarchy.landmark_names, hierarchy.landmark_to_category, strict=True
            )
            if parent == c
        ]
        if members:
            names += members
            blocks.append((printable(category), len(members)))
    return names + [n for n in extra if n not in names], blocks


def most_confused_pairs(
    true_names: Sequence[str], pred_names: Sequence[str], top: int = CONFUSED_PAIRS
) -> list[tuple[str, str, int]]:
    """The ``top`` (true, predicted, count) pairs with most errors, most first (ties by name)."""
    errors = Counter((t, p) for t, p in zip(true_names, pred_names, strict=True) if t != p)
    ranked = sorted(errors.items(), key=lambda item: (-item[1], item[0]))
    return [(t, p, n) for (t, p), n in ranked[:top]]


def confused_pairs_figure(
    task: str, true_names: Sequence[str], pred_names: Sequence[str], class_names: Sequence[str]
) -> Figure:
    """Horizontal bars of the most-confused (true → predicted) pairs, titled with the
    task's macro F1 and accuracy over all ``class_names``."""
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.array([index[t] for t in true_names], dtype=np.int64)
    preds = np.array([index[p] for p in pred_names], dtype=np.int64)
    pairs = most_confused_pairs(true_names, pred_names)
    fig = Figure(figsize=(10, 1.5 + 0.3 * max(len(pairs), 1)), layout="constrained")
    ax = fig.subplots()
    labels = [f"{printable(t)} → {printable(p)}" for t, p, _ in reversed(pairs)]
    ax.barh(range(len(pairs)), [n for *_, n in reversed(pairs)], color=TASK_COLORS[task])
    ax.set_yticks(range(len(pairs)), labels, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("test images (true → predicted)")
    errors = int((targets != preds).sum())
    ax.set_title(
        f"Most confused pairs: {task} ({len(class_names)} classes, {errors} errors) — macro F1 "
        f"{macro_f1(preds, targets, len(class_names)):.3f}, accuracy "
        f"{float(np.mean(targets == preds)) if len(targets) else 0.0:.3f} (n={len(targets)})"
    )
    return fig


def bar_chart_figure(
    labels: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    title: str,
) -> Figure:
    """Grouped bars per label; ``series[name] = (means, ci_lows, ci_highs)``."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(labels) + 2.0), 5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, (means, lows, highs)) in enumerate(series.items()):
        means = np.asarray(means)
        errors = np.clip([means - np.asarray(lows), np.asarray(highs) - means], 0.0, None)
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, means, width, yerr=errors, capsize=3, label=name)
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.set_xlim(-0.75, len(labels) - 0.25)
    ax.set_ylim(0.0, 1.15)
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("macro F1: mean over seeds, 95% CI")
    ax.set_xlabel("approach")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", ncols=len(series))
    return fig


def run_monitor(run_dir: Path) -> str:
    """``strategy.monitor`` of the run (its config.yaml), ``val/f1`` when not recorded."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return "val/f1"
    return str(OmegaConf.select(OmegaConf.load(path), "strategy.monitor") or "val/f1")


def curves_figures(run_dir: Path) -> dict[str, Figure]:
    """The learning curves of each logged stage of ``run_dir``, by stage name."""
    monitor = run_monitor(run_dir)
    return {
        csv_path.parent.name: curves_figure(
            csv_path.parent.name, read_epoch_metrics(csv_path), monitor
        )
        for csv_path in sorted((run_dir / "logs").glob("*/metrics.csv"))
    }


def read_hierarchy(run_dir: Path) -> LabelHierarchy | None:
    """hierarchy.json of a run, None when absent or unreadable (logged)."""
    path = run_dir / "hierarchy.json"
    if not path.is_file():
        return None
    try:
        return LabelHierarchy.from_dict(read_json(path))
    except (MalformedRunError, KeyError, TypeError, ValueError) as error:
        log.warning("%s: unreadable (%s)", printable(str(path)), error)
        return None


def confusion_figures(run_dir: Path) -> dict[str, Figure]:
    """Each task's confusion figure (normalised matrix, landmarks in category blocks; the
    most-confused pairs above MATRIX_MAX_CLASSES classes), by task; {} without predictions."""
    try:
        predictions = read_predictions(run_dir / "predictions.csv")
    except MalformedRunError as error:
        log.warning("no confusion matrices: %s", error)
        return {}
    hierarchy = read_hierarchy(run_dir)
    figures = {}
    for task in TASKS:
        true, pred = predictions.true[task], predictions.pred[task]
        seen = sorted(set(true) | set(pred))
        if task == "landmark":
            names, blocks = category_ordered(hierarchy, seen)
        else:
            known = hierarchy.category_names if hierarchy is not None else []
            names, blocks = [*known, *(n for n in seen if n not in known)], []
        if len(names) > MATRIX_MAX_CLASSES:
            figures[task] = confused_pairs_figure(task, true, pred, names)
        else:
            matrix = confusion_matrix(true, pred, names)
            figures[task] = confusion_figure(task, matrix, names, blocks)
    return figures


def write_run_plots(run_dir: str | Path) -> list[Path]:
    """Write ``curves_<stage>.png`` per logged stage and ``confusion_<task>.png`` per task."""
    run_dir = Path(run_dir)
    out_dir = run_dir / "plots"
    written = [
        save_png(fig, out_dir / f"curves_{stage}.png")
        for stage, fig in curves_figures(run_dir).items()
    ]
    written += [
        save_png(fig, out_dir / f"confusion_{task}.png")
        for task, fig in confusion_figures(run_dir).items()
    ]
    log.info("wrote %d plots to %s", len(written), printable(str(out_dir)))
    return written
