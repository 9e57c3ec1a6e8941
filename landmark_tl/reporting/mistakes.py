"""The report's hierarchy-aware scores: mistake severity and distance@k per approach, with
the bootstrap and Holm treatment Table 1 gives macro F1.

Each run's predictions.csv holds, per test image, the mean tree distance of its top-1 and
top-5 ranked landmarks to the true one (``landmark_distance_at_<k>``,
:mod:`landmark_tl.evaluation.hierarchy_metrics`). A resample draws the splits, within each
split the seeds and the test images (stratified by true landmark), as Table 1 does;
mistake severity of a resample is the sum of its top-1 distances over its count of wrong
images, distance@k the mean of its top-k distances. Each row is compared with the linear
probe by a paired bootstrap, Holm-corrected over the rows of each score. Lower is better.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from landmark_tl.evaluation.hierarchy_metrics import HIERARCHY_TOP_K
from landmark_tl.evaluation.stats import (
    bootstrap_p_value,
    holm_adjust,
    percentile_interval,
    resample_indices,
)
from landmark_tl.runs.rundir import Run, read_text

if TYPE_CHECKING:  # table.py imports this module
    from landmark_tl.reporting.table import ApproachRow

ALPHA = 0.05
SEVERITY = "mistake_severity"
SCORES = (SEVERITY, *(f"hierarchical_distance_at_{k}" for k in HIERARCHY_TOP_K))
TITLES = {
    SEVERITY: "Mistake severity",
    **{f"hierarchical_distance_at_{k}": f"Dist@{k}" for k in HIERARCHY_TOP_K},
}


@dataclass(frozen=True)
class HierarchyScore:
    """One score of one approach: mean over runs, bootstrap 95% interval, and versus the
    probe (row − probe, its interval, Holm-adjusted p-value) when there is one."""

    mean: float
    ci_low: float
    ci_high: float
    vs_probe: tuple[float, float, float, float] | None = None

    @property
    def verdict(self) -> str:
        """``< probe`` (fewer or milder mistakes), ``> probe`` or ``≈ probe``."""
        if self.vs_probe is None:
            return ""
        diff, _, _, p = self.vs_probe
        return "≈ probe" if p > ALPHA else "< probe" if diff < 0 else "> probe"


def run_distances(run: Run) -> dict[int, np.ndarray] | None:
    """Per k, the run's per-image top-k distances in path order; None for a run written
    before they were recorded."""
    rows = list(csv.DictReader(io.StringIO(read_text(run.directory / "predictions.csv"))))
    columns = [f"landmark_distance_at_{k}" for k in HIERARCHY_TOP_K]
    if not rows or any(c not in rows[0] for c in columns):
        return None
    rows.sort(key=lambda row: row["path"])
    return {
        k: np.array([float(r[c]) for r in rows])
        for k, c in zip(HIERARCHY_TOP_K, columns, strict=True)
    }


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """np.nanmean without its "Mean of empty slice" warning: a resample whose runs made no
    mistake has no severity, and NaN (left out of the interval) is the intended answer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        return np.nanmean(values, axis=axis)


Statistic = Callable[[np.ndarray], np.ndarray]  # (B, n) per-image values -> (B,)


def _statistics() -> dict[str, tuple[int, Statistic]]:
    def severity(d: np.ndarray) -> np.ndarray:
        wrong = (d > 0).sum(axis=-1)
        return np.divide(d.sum(axis=-1), wrong, out=np.full(wrong.shape, np.nan), where=wrong > 0)

    stats: dict[str, tuple[int, Statistic]] = {SEVERITY: (1, severity)}
    for k in HIERARCHY_TOP_K:
        stats[f"hierarchical_distance_at_{k}"] = (k, lambda d: d.mean(axis=-1))
    return stats


def summarise_mistakes(
    groups: Mapping[str, Sequence[Run]],
    probe: str | None,
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, HierarchyScore]]:
    """Per approach (group) and score, a :class:`HierarchyScore`; approaches with a run
    that lacks the per-image distances are left out."""
    distances = {name: [run_distances(r) for r in runs] for name, runs in groups.items()}
    usable = {n: runs for n, runs in groups.items() if all(d is not None for d in distances[n])}
    if not usable:
        return {}
    rng = np.random.default_rng(seed)
    strata = {
        r.predictions.paths: r.predictions.true["landmark"] for g in usable.values() for r in g
    }
    draws = {p: resample_indices(s, bootstrap, rng) for p, s in sorted(strata.items())}
    keys = {n: tuple(sorted({r.predictions.paths for r in g})) for n, g in usable.items()}
    split_draws = {
        key: rng.integers(0, len(key), size=(bootstrap, len(key)))
        for key in sorted(set(keys.values()))
    }
    out: dict[str, dict[str, HierarchyScore]] = {n: {} for n in usable}
    for score, (k, statistic) in _statistics().items():
        samples, means = {}, {}
        for name, runs in usable.items():
            values = [d[k] for d in distances[name]]  # type: ignore[index]
            per_split = []
            for paths in keys[name]:
                mine = [
                    v for r, v in zip(runs, values, strict=True) if r.predictions.paths == paths
                ]
                per_run = np.stack([statistic(v[draws[paths]]) for v in mine])
                drawn = rng.integers(0, len(mine), size=(bootstrap, len(mine)))
                per_split.append(_nanmean(per_run[drawn, np.arange(bootstrap)[:, None]], axis=1))
            drawn = split_draws[keys[name]]
            samples[name] = _nanmean(
                np.stack(per_split)[drawn, np.arange(bootstrap)[:, None]], axis=1
            )
            means[name] = float(_nanmean(np.array([statistic(v[None])[0] for v in values])))
        versus = _versus_probe(samples, means, keys, probe)
        for name in usable:
            low, high = percentile_interval(samples[name][~np.isnan(samples[name])])
            out[name][score] = HierarchyScore(means[name], low, high, versus.get(name))
    return out


def _versus_probe(
    samples: Mapping[str, np.ndarray],
    means: Mapping[str, float],
    keys: Mapping[str, tuple[tuple[str, ...], ...]],
    probe: str | None,
) -> dict[str, tuple[float, float, float, float]]:
    """(row − probe) per row on the probe's splits: observed difference, paired 95%
    interval and Holm-adjusted p-value."""
    if probe is None or probe not in samples:
        return {}
    names = [n for n in samples if n != probe and keys[n] == keys[probe]]
    diffs = [samples[n] - samples[probe] for n in names]
    diffs = [d[~np.isnan(d)] for d in diffs]
    adjusted = holm_adjust([bootstrap_p_value(d) for d in diffs])
    return {
        name: (means[name] - means[probe], *percentile_interval(d), p)
        for name, d, p in zip(names, diffs, adjusted, strict=True)
    }


MISTAKES_HEADING = "How bad the mistakes are (tree distance; lower is better)"
MISTAKES_NOTE = (
    "Tree distance of two landmarks: height of their lowest common ancestor (0 the same "
    "landmark, 1 another landmark of the same category, 2 another category). Mistake "
    "severity: mean tree distance of the predicted landmark over the wrong predictions "
    "(1 to 2). Dist@k: per image the mean tree distance of the k top-ranked landmarks, "
    "averaged over images (Bertinetto et al. 2020). Intervals and Holm-corrected paired "
    "tests against the probe as for macro F1 above."
)


def mistakes_rows(
    table_rows: Sequence[ApproachRow],
    mistakes: Mapping[str, Mapping[str, HierarchyScore]],
) -> tuple[list[str], list[list[str]]]:
    """The section's table as (header, rows of formatted cells): one row per Table 1 row
    (in its order) that has the scores, its landmark macro F1 beside them; shared by the
    Markdown, HTML and LaTeX reports."""
    probe = any(s.vs_probe is not None for row in mistakes.values() for s in row.values())
    header = ["Approach", "Landmark F1"]
    for score in SCORES:
        header += [TITLES[score], "95% CI"] + (["vs linear probe"] if probe else [])
    rows = []
    for row in table_rows:
        name = row.approach
        if name not in mistakes:
            continue
        cells = [name, f"{row.scores['landmark'].mean:.3f}"]
        for score in SCORES:
            s = mistakes[name][score]
            cells += [f"{s.mean:.3f}", f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"]
            if probe:
                v = s.vs_probe
                cells.append(
                    "—" if v is None else f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}] {s.verdict}"
                )
        rows.append(cells)
    return header, rows


def mistakes_markdown(
    table_rows: Sequence[ApproachRow],
    mistakes: Mapping[str, Mapping[str, HierarchyScore]],
) -> list[str]:
    """The Markdown section (:func:`mistakes_rows`); no lines when no run recorded them."""
    if not mistakes:
        return []
    header, rows = mistakes_rows(table_rows, mistakes)
    return [
        "",
        f"## {MISTAKES_HEADING}",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "--:|" * (len(header) - 1),
        *("| " + " | ".join([row[0].replace("|", "\\|"), *row[1:]]) + " |" for row in rows),
        "",
        MISTAKES_NOTE,
    ]


CSV_FIELDS = ("mean", "ci_low", "ci_high", "vs_probe_diff", "vs_probe_ci_low")
CSV_FIELDS += ("vs_probe_ci_high", "vs_probe_p_holm", "vs_probe_verdict")


def mistakes_csv_header() -> list[str]:
    """table1.csv's columns of the hierarchy-aware scores: ``<score>_<field>``."""
    return [f"{score}_{field}" for score in SCORES for field in CSV_FIELDS]


def mistakes_csv_cells(scores: Mapping[str, HierarchyScore] | None) -> list[float | str | None]:
    """One row's cells under :func:`mistakes_csv_header` (None where absent)."""
    cells: list[float | str | None] = []
    for score in SCORES:
        s = None if scores is None else scores.get(score)
        if s is None:
            cells += [None] * len(CSV_FIELDS)
            continue
        cells += [s.mean, s.ci_low, s.ci_high]
        cells += [None] * 4 if s.vs_probe is None else list(s.vs_probe)
        cells.append(s.verdict or None)
    return cells
