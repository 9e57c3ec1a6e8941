"""Compare runs: Table 1, one row per approach with seed spread, bootstrap intervals and
paired tests (:func:`summarise`). :mod:`landmark_tl.reporting.render` writes it as Markdown,
CSV, LaTeX and a bar chart, :mod:`~landmark_tl.reporting.report_html` as HTML pages;
``landmark-tl report`` is :mod:`landmark_tl.commands.report`.

Runs on different splits (different test images, e.g. ``data.split.seed``) of one approach
are pooled: the split is a resampling level of the bootstrap, shared by all approaches.
Each row is compared with the best row (and with the ``linear_probe`` row, when there is
one) by a paired bootstrap; the verdicts are Holm-corrected for the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
from landmark_tl.reporting.mistakes import summarise_mistakes
from landmark_tl.reporting.recommendation import recommend
from landmark_tl.reporting.studies import row_groups
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
    VersusProbe,
)
from landmark_tl.runs.rundir import TASKS, Run

PROBE = "linear_probe"  # the baseline row every other row is compared with


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
