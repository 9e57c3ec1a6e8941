"""The report's recommendation: ONE approach to deploy, chosen on validation only.

The choice reads nothing but validation scores: the approach with the highest mean
validation landmark macro F1 over its runs (the finer task, which the category follows for
the hierarchy-consistent approaches). It must beat the linear probe's validation score to
be recommended over it; otherwise the probe is recommended and the report says that
nothing beats it. Only then are test scores read, to state what the choice is expected
to gain: the difference of mean test landmark F1 to the probe with its paired bootstrap
95% interval and Holm-corrected verdict (Table 1's "vs linear probe"), and on how many
splits its mean test F1 is above the probe's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from landmark_tl.reporting.table import ApproachRow, Recommendation
from landmark_tl.runs.rundir import Run


def choose(rows: Sequence[ApproachRow], probe: str) -> tuple[str, str | None]:
    """The row with the highest validation landmark F1 if it is above the probe's, else
    the probe; with the best other row. Reads validation scores only; ``rows`` are the
    candidates (run on the probe's splits) and the probe."""
    scored = [r for r in rows if r.val_landmark_f1 is not None]
    by_name = {r.approach: r.val_landmark_f1 for r in scored}
    others = [r for r in scored if r.approach != probe]
    best = max(others, key=lambda r: r.val_landmark_f1, default=None)  # type: ignore[arg-type, return-value]
    if best is None or best.val_landmark_f1 <= by_name[probe]:  # type: ignore[operator]
        return probe, None if best is None else best.approach
    return best.approach, None


def _test_f1_by_split(runs: Sequence[Run]) -> dict[tuple[str, ...], float]:
    split: dict[tuple[str, ...], list[float]] = {}
    for run in runs:
        f1 = run.metrics.get("test", {}).get("landmark", {}).get("macro_f1")
        if f1 is not None:
            split.setdefault(run.predictions.paths, []).append(float(f1))
    return {paths: float(np.mean(values)) for paths, values in split.items()}


def recommend(
    rows: Sequence[ApproachRow], groups: Mapping[str, Sequence[Run]], probe: str | None
) -> Recommendation | None:
    """The recommendation over Table 1's rows and their runs; None without a probe row or
    without the probe's validation score (nothing to compare against). Only rows run on
    exactly the probe's splits are candidates (the others compare on other images)."""
    by_name = {r.approach: r for r in rows}
    if probe is None or probe not in by_name or by_name[probe].val_landmark_f1 is None:
        return None
    splits = {n: {r.predictions.paths for r in runs} for n, runs in groups.items()}
    comparable = [r for r in rows if splits[r.approach] == splits[probe]]
    name, runner_up = choose(comparable, probe)
    row = by_name[name]
    versus = row.scores["landmark"].vs_probe
    mine, base = _test_f1_by_split(groups[name]), _test_f1_by_split(groups[probe])
    common = set(mine) & set(base)
    return Recommendation(
        approach=name,
        probe=probe,
        val_f1=float(row.val_landmark_f1),  # type: ignore[arg-type]
        probe_val_f1=float(by_name[probe].val_landmark_f1),  # type: ignore[arg-type]
        runner_up=runner_up,
        gain=None if versus is None else versus.diff,
        gain_low=None if versus is None else versus.diff_low,
        gain_high=None if versus is None else versus.diff_high,
        verdict=None if versus is None else versus.verdict,
        wins=sum(mine[p] > base[p] for p in common),
        splits=len(common),
    )


def recommendation_lines(rec: Recommendation | None) -> list[str]:
    """The report's Markdown section; no lines without a recommendation."""
    if rec is None:
        return []
    lines = ["", "## Recommendation", ""]
    if not rec.beats_probe:
        other = (
            f" (the best other, `{rec.runner_up}`, does not score above it on validation)"
            if rec.runner_up
            else ""
        )
        lines.append(
            f"**Deploy `{rec.probe}`: nothing beats the linear probe** on validation landmark "
            f"macro F1 ({rec.probe_val_f1:.3f}){other}."
        )
    else:
        lines.append(
            f"**Deploy `{rec.approach}`**, chosen on validation landmark macro F1 "
            f"({rec.val_f1:.3f} vs the probe's {rec.probe_val_f1:.3f})."
        )
        if rec.gain is not None:
            lines.append(
                f"Expected test gain over the probe: {rec.gain:+.3f} landmark macro F1, 95% "
                f"interval [{rec.gain_low:+.3f}, {rec.gain_high:+.3f}] ({rec.verdict}); above "
                f"the probe on {rec.wins} of {rec.splits} split(s)."
            )
            if rec.verdict != "> probe":
                lines.append(
                    "The interval includes 0: on these test images it does not beat the "
                    "probe reliably, so the probe remains a safe choice."
                )
    lines += [
        "",
        "Chosen on validation scores only (test scores never enter the choice), among the "
        "approaches run on the probe's splits; the gain is measured on the test images "
        "afterwards.",
    ]
    return lines
