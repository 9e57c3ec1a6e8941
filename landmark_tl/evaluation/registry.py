"""The per-task metrics, by name: what training logs, metrics.json holds and reports show.

Each entry is a function of the per-class counts (:mod:`landmark_tl.evaluation.counts`),
batched over leading axes, so one entry serves the Lightning metric of a run, the stacked
heads of the heads launcher (all members at once) and the one-shot test scores.
Everything that names a task metric reads this table: the logged names
(``val/<task>_<name>`` and the tasks' mean ``val/<name>``), the per-task fields of
metrics.json (``test.<task>.<field>``, ``val.<task>.<field>``), the monitors a run dir
can rank by, and the words of plots and tables.

Adding a metric: one function of :class:`ClassCounts` and one entry in ``BUILTIN`` below,
or, from any module, ``register_task_metric(TaskMetric(...))`` before the run is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from landmark_tl.evaluation.counts import (
    ClassCounts,
    accuracy_from_counts,
    macro_f1_from_counts,
)


@dataclass(frozen=True)
class TaskMetric:
    """One per-task score.

    ``name`` is the short log name (``val/landmark_<name>``), ``field`` its key in
    metrics.json's per-task scores, ``label`` its words in plots and tables, and
    ``from_counts`` computes it from (..., C) class counts: one value per leading row (a
    module-level function, so that the strategy module, which holds it, pickles).
    """

    name: str
    field: str
    label: str
    from_counts: Callable[[ClassCounts], torch.Tensor]


BUILTIN = (
    TaskMetric("f1", "macro_f1", "macro F1", macro_f1_from_counts),
    TaskMetric("acc", "accuracy", "accuracy", accuracy_from_counts),
)

TASK_METRICS: dict[str, TaskMetric] = {m.name: m for m in BUILTIN}


def register_task_metric(metric: TaskMetric) -> TaskMetric:
    """Add ``metric`` to the table (after the built-in ones); its name and field must be new
    and its name free of ``_`` and ``/`` (``val/<task>_<name>`` is split at the last ``_``)."""
    if "_" in metric.name or "/" in metric.name:
        raise ValueError(f"task metric name '{metric.name}': use no '_' or '/' in it")
    taken = {m.name for m in TASK_METRICS.values()} | {m.field for m in TASK_METRICS.values()}
    if metric.name in taken or metric.field in taken:
        raise ValueError(
            f"task metric '{metric.name}' (field '{metric.field}'): that name or field is "
            f"taken; registered: {sorted(TASK_METRICS)}"
        )
    TASK_METRICS[metric.name] = metric
    return metric


def registered_metrics() -> tuple[TaskMetric, ...]:
    """The registered metrics, in registration order (the built-in ones first)."""
    return tuple(TASK_METRICS.values())


def metric_names() -> tuple[str, ...]:
    """Their short log names: ``("f1", "acc", ...)``."""
    return tuple(TASK_METRICS)


def field_of(name: str) -> str | None:
    """The metrics.json field of the metric logged as ``name`` (None: not a task metric)."""
    metric = TASK_METRICS.get(name)
    return None if metric is None else metric.field


def label_of(name: str) -> str:
    """The words for the metric logged as ``name`` (the name itself when unknown)."""
    metric = TASK_METRICS.get(name)
    return name if metric is None else metric.label


def scores_from_counts(counts: ClassCounts) -> dict[str, torch.Tensor]:
    """Every metric of (..., C) counts, by metrics.json field: a (...,) float64 each."""
    return {m.field: m.from_counts(counts) for m in TASK_METRICS.values()}
