"""Table 1 as data: what :func:`landmark_tl.reporting.report.summarise` computes and every
renderer (Markdown, CSV, LaTeX, HTML) reads: the rows, each task's score and its marks, the
comparison with the linear probe and the recommendation.

On its own so that the modules that compute parts of it (recommendation) and those that
render it (render, report_latex, report_html) import the types without importing the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from landmark_tl.evaluation.stats import Comparison
from landmark_tl.reporting.mistakes import HierarchyScore

# What TaskScore.mark and VersusProbe.verdict hold, and the error rate behind them.
BEST, SAME, WORSE = "best", "≈ best", "worse"
ABOVE_PROBE, SAME_AS_PROBE, BELOW_PROBE = "> probe", "≈ probe", "< probe"
ALPHA = 0.05  # family-wise error rate of each task's verdicts (Holm)


@dataclass(frozen=True)
class VersusProbe:
    """Paired bootstrap of (row − linear probe): observed difference of mean F1, its 95%
    interval, and the Holm-adjusted p-value behind the verdict."""

    diff: float
    diff_low: float
    diff_high: float
    p_holm: float
    verdict: str


@dataclass(frozen=True)
class TaskScore:
    """Macro F1 of one task for one approach.

    ``mark`` is BEST, SAME or WORSE; ``comparison`` the paired bootstrap against the best
    and ``p_holm`` its Holm-adjusted p-value; ``fallback`` is set when test images differ
    and CI overlap decided the mark instead; ``vs_probe`` compares with the linear probe.
    """

    mean: float
    std: float | None
    ci_low: float
    ci_high: float
    mark: str
    fallback: bool
    comparison: Comparison | None
    p_holm: float | None = None
    vs_probe: VersusProbe | None = None


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
    first_in: int | None = None  # splits on which it has the highest test landmark F1


@dataclass(frozen=True)
class Recommendation:
    """The approach chosen on validation and what it is expected to gain on test."""

    approach: str
    probe: str
    val_f1: float
    probe_val_f1: float
    runner_up: str | None  # the best other approach on validation, when the probe is chosen
    gain: float | None  # mean test landmark F1, chosen − probe (None: the probe is chosen)
    gain_low: float | None
    gain_high: float | None
    verdict: str | None  # Table 1's "vs linear probe" verdict of the chosen row
    wins: int  # splits on which the chosen row's mean test F1 is above the probe's
    splits: int

    @property
    def beats_probe(self) -> bool:
        return self.approach != self.probe


@dataclass(frozen=True)
class Table:
    """Table 1 and what it was computed from."""

    rows: list[ApproachRow]
    ranked_by: str
    roots: tuple[str, ...]
    test_images: tuple[int, ...]
    bootstrap: int
    seed: int
    splits: int = 1  # distinct test sets (splits) among the runs
    probe: str | None = None  # the row the "vs probe" columns compare with
    # per row, its hierarchy-aware scores (landmark_tl.reporting.mistakes)
    mistakes: dict[str, dict[str, HierarchyScore]] = field(default_factory=dict)
    # the one approach to deploy, chosen on validation (landmark_tl.reporting.recommendation)
    recommendation: Recommendation | None = None
