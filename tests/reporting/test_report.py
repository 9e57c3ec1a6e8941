"""Table 1: numpy macro F1, bootstrap statistics, run collection, files and command line."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_tl.commands.report import main
from landmark_tl.evaluation.metrics import macro_f1, score_predictions
from landmark_tl.evaluation.stats import batched_macro_f1, paired_comparison, percentile_interval
from landmark_tl.reporting.render import csv_table, markdown_table, write_report
from landmark_tl.reporting.report import summarise
from landmark_tl.reporting.table import ABOVE_PROBE, BEST, SAME, WORSE
from landmark_tl.runs.rundir import collect_runs

LANDMARKS = ["Gothic/Cologne", "Gothic/Milan", "Pyramids/Giza", "Pyramids/Louvre"]
PARTNER = {0: 2, 1: 3, 2: 0, 3: 1}  # a landmark of the other category
TRUTH = [LANDMARKS[i // 5] for i in range(20)]  # 5 test images per landmark
PATHS = [f"img_{i:02d}.png" for i in range(20)]


def write_predictions(run_dir: Path, true: list[str], pred: list[str], paths: list[str]) -> None:
    """predictions.csv as train.py writes it; categories from the ``Category/Landmark`` names."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["path"]
            + [f"{c}_{t}" for t in ("category", "landmark") for c in ("true", "pred", "prob")]
        )
        for path, t, p in zip(paths, true, pred, strict=True):
            writer.writerow([path, t.split("/")[0], p.split("/")[0], 0.9, t, p, 0.8])


def make_run(
    root: Path, name: str, approach: str, seed: int, pred: list[str], paths: list[str] = PATHS
) -> Path:
    """A fake run dir; approach "A" runs carry hierarchy metrics and timings.train_s."""
    run_dir = root / name
    write_predictions(run_dir, TRUTH, pred, paths)
    metrics: dict[str, Any] = {
        "approach": approach,
        "strategy": "multi_output",
        "seed": seed,
        "data": {"root": "/data/monuments"},
        "stages": [{"name": "category", "seconds": 2.0}, {"name": "landmark", "seconds": 3.0}],
    }
    if approach == "A":
        metrics["hierarchy"] = {"full_path_accuracy": 0.9 + 0.05 * seed, "consistency": 1.0}
        metrics["timings"] = {"train_s": 10.0 * (seed + 1)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def wrong_first(k: int) -> list[str]:
    """Predictions with the first k images of each landmark given to its partner landmark."""
    return [
        LANDMARKS[PARTNER[i // 5]] if i % 5 < k else LANDMARKS[i // 5] for i in range(len(TRUTH))
    ]


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """2 approaches × 2 seeds: A perfect; B right on 60% and 40% of the images (F1 0.6, 0.4)."""
    root = tmp_path / "multirun"
    make_run(root, "0", "A", 0, TRUTH)
    make_run(root, "1", "A", 1, TRUTH)
    make_run(root, "2", "B", 0, wrong_first(2))
    make_run(root, "3", "B", 1, wrong_first(3))
    return root


def test_macro_f1_matches_hand_computed_values() -> None:
    # class 0: TP 1, FP 1 -> 2/3; class 1: TP 2, FN 1 -> 4/5
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # classes 2..4 appear in neither preds nor targets: left out of the mean
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1], num_classes=5) == pytest.approx(11 / 15)
    # class 1 is a target but never predicted right: F1 0, kept in the mean
    assert macro_f1([0, 0], [0, 1], num_classes=3) == pytest.approx((2 / 3 + 0.0) / 2)
    rows = batched_macro_f1(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]), 2)
    np.testing.assert_allclose(rows, [1.0, (0.0 + 2 / 3) / 2])


def test_the_bootstraps_batched_macro_f1_agrees_with_torchmetrics() -> None:
    from torchmetrics.functional.classification import multiclass_f1_score

    rng = np.random.default_rng(3)
    preds, targets = rng.integers(0, 12, (6, 40)), rng.integers(0, 9, (6, 40))
    rows = batched_macro_f1(preds, targets, 15)  # classes 12..14 in neither: left out
    for row, p, t in zip(rows, preds, targets, strict=True):
        reference = multiclass_f1_score(torch.from_numpy(p), torch.from_numpy(t), 15)
        assert row == pytest.approx(float(reference), abs=1e-6)
        assert macro_f1(p, t, 15) == pytest.approx(float(reference), abs=1e-6)
        expected = score_predictions(torch.from_numpy(p), torch.from_numpy(t), 15)
        assert expected["macro_f1"] == pytest.approx(float(reference), abs=1e-6)


def test_paired_comparison_and_interval() -> None:
    best = np.full(101, 0.9)
    tied = paired_comparison(best, best - np.arange(-25, 76) / 100)  # differences -0.25 .. 0.75
    assert (tied.diff_low, tied.diff_high) == pytest.approx((-0.225, 0.725))
    assert not tied.distinguishable
    assert tied.share_at_least_best == pytest.approx(26 / 101)
    worse = paired_comparison(best, best - np.arange(5, 106) / 100)  # differences 0.05 .. 1.05
    assert worse.distinguishable and worse.share_at_least_best == 0.0
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))


def test_table_rows_means_stds_and_marks(multirun: Path) -> None:
    runs, skipped = collect_runs([multirun])
    table = summarise(runs, bootstrap=500, seed=0)
    assert skipped == []
    assert [row.approach for row in table.rows] == ["A", "B"]
    a, b = table.rows
    for task in ("category", "landmark"):
        assert a.scores[task].mean == pytest.approx(1.0)
        assert a.scores[task].std == pytest.approx(0.0)
        assert (a.scores[task].ci_low, a.scores[task].ci_high) == (1.0, 1.0)
        assert a.scores[task].mark == BEST
        score = b.scores[task]
        assert score.mean == pytest.approx(0.5)
        assert score.std == pytest.approx(math.sqrt(0.1**2 + 0.1**2))
        assert score.mark == WORSE and not score.fallback
        assert score.comparison.diff_low > 0  # the paired interval excludes 0
        assert score.comparison.share_at_least_best == 0.0
        assert score.ci_low <= score.mean <= score.ci_high
    assert a.seeds == (0, 1) and len(b.seeds) == 2
    assert a.full_path_accuracy == pytest.approx(0.925) and a.consistency == 1.0
    assert b.full_path_accuracy is None and b.consistency is None  # older runs: blank cells
    assert a.train_seconds == pytest.approx(15.0) and b.train_seconds == pytest.approx(5.0)
    assert table.test_images == (20,) and table.roots == ("/data/monuments",)


def test_identical_predictions_are_not_distinguishable(tmp_path: Path) -> None:
    make_run(tmp_path, "c", "C", 0, wrong_first(2))
    make_run(tmp_path, "d", "D", 0, wrong_first(2))
    rows = summarise(collect_runs([tmp_path])[0], bootstrap=300).rows
    marks = sorted(row.scores["landmark"].mark for row in rows)
    assert marks == sorted([BEST, SAME])
    follower = next(row for row in rows if row.scores["landmark"].mark == SAME)
    comparison = follower.scores["landmark"].comparison
    assert (comparison.diff_low, comparison.diff_high) == (0.0, 0.0)
    assert comparison.share_at_least_best == 1.0
    assert follower.scores["landmark"].std is None  # one seed


def test_different_test_images_fall_back_to_interval_overlap(multirun: Path) -> None:
    other_paths = [f"other_{i:02d}.png" for i in range(20)]
    make_run(multirun, "4", "E", 0, wrong_first(1), paths=other_paths)
    table = summarise(collect_runs([multirun])[0], bootstrap=300)
    e = next(row for row in table.rows if row.approach == "E")
    assert e.scores["landmark"].fallback and e.scores["landmark"].comparison is None
    assert "† test images differ" in markdown_table(table)


def test_bootstrap_is_deterministic_for_a_seed(multirun: Path) -> None:
    runs = collect_runs([multirun])[0]
    first, again = summarise(runs, bootstrap=200, seed=7), summarise(runs, bootstrap=200, seed=7)
    assert first == again
    b_scores = [summarise(runs, bootstrap=200, seed=s).rows[1].scores["landmark"] for s in (7, 8)]
    assert b_scores[0].ci_low <= b_scores[0].mean <= b_scores[0].ci_high
    assert (b_scores[0].ci_low, b_scores[0].ci_high) != (b_scores[1].ci_low, b_scores[1].ci_high)


def test_write_report_files(multirun: Path, tmp_path: Path) -> None:
    table = summarise(collect_runs([multirun])[0], bootstrap=200)
    files = write_report(table, tmp_path / "out")
    assert {p.name for p in files.values()} == {
        "table1.md",
        "table1.csv",
        "table1.png",
        "table1.tex",
    }
    latex = files["latex"].read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex and "\\end{tabular}" in latex
    assert "A & 2 & \\textbf{1.000} $\\pm$ 0.000 & [1.000, 1.000] & best" in latex
    assert "B & 2 & 0.500 $\\pm$ 0.141" in latex and "& worse" in latex
    markdown = files["markdown"].read_text()
    assert "4 runs of 2 approaches on `/data/monuments`; 20 test images; bootstrap B = 200" in (
        markdown
    )
    assert "| A | 2 | 1.000 ± 0.000 | [1.000, 1.000] | best |" in markdown
    assert f"| B | 2 | 0.500 ± 0.141 | [{table.rows[1].scores['category'].ci_low:.3f}" in markdown
    rows = list(csv.DictReader(files["csv"].open()))
    assert [r["approach"] for r in rows] == ["A", "B"]
    assert float(rows[1]["landmark_f1_mean"]) == pytest.approx(0.5)
    assert rows[1]["landmark_f1_mark"] == WORSE and rows[1]["full_path_accuracy"] == ""
    with Image.open(files["png"]) as image:
        assert image.format == "PNG" and image.width > 400


def test_cli_writes_report_and_prints_table(
    multirun: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([f"runs={multirun}", "bootstrap=100", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert "| A | 2 |" in out and "| B | 2 |" in out
    report = multirun.parent / "multirun-report"  # beside the inputs, never inside them
    assert (report / "table1.md").is_file() and (report / "table1.png").is_file()
    assert not list(multirun.glob("table1.*")) and not (multirun / "report.html").exists()
    assert f"Read `{multirun}`: 4 finished runs in 1 study." in (report / "table1.md").read_text()


def test_cli_exit_code_2_for_a_path_without_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([f"runs={empty}"]) == 2
    assert f"no metrics.json found below {empty}" in capsys.readouterr().err


def test_broken_predictions_are_skipped_and_named(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = make_run(multirun, "5", "B", 2, TRUTH)
    (broken / "predictions.csv").write_text("path,true_category\nimg_00.png,Gothic\n")
    missing = make_run(multirun, "6", "B", 3, TRUTH)
    (missing / "predictions.csv").unlink()
    out_dir = tmp_path / "report"
    assert main([f"runs={multirun}", f"out={out_dir}", "bootstrap=50"]) == 0
    captured = capsys.readouterr()
    for run_dir in (broken, missing):
        assert f"warning: skipped run {run_dir}" in captured.err
        assert f"skipped run {run_dir}" in (out_dir / "table1.md").read_text()
    assert "missing columns" in captured.err
    assert "| B | 2 |" in captured.out  # the broken runs are not counted


def test_resampling_stays_within_each_landmark():
    import numpy as np

    from landmark_tl.evaluation.stats import resample_indices

    strata = np.array(["a", "a", "b", "b", "b", "c"])
    draws = resample_indices(strata, 200, np.random.default_rng(0))
    assert draws.shape == (200, 6)
    assert (strata[draws] == strata).all()  # every slot keeps its landmark
    assert len(np.unique(draws[:, 2:5])) == 3  # and draws vary within a landmark


def test_bootstrap_also_resamples_seeds():
    import numpy as np

    from landmark_tl.evaluation.stats import resample_indices, seed_averaged_f1

    targets = np.array([0, 0, 1, 1])
    perfect, wrong = (targets.copy(), targets), (1 - targets, targets)
    draws = resample_indices(targets, 400, np.random.default_rng(0))
    samples = seed_averaged_f1([perfect, wrong], [draws, draws], 2, np.random.default_rng(1))
    # both seeds drawn: 0.5; only the perfect one: 1; only the wrong one: 0
    assert set(np.round(samples, 6)) == {0.0, 0.5, 1.0}
    assert abs(samples.mean() - 0.5) < 0.05


def test_sweep_points_are_grouped_by_their_overrides_and_ranked(tmp_path):
    root = tmp_path / "sweep"
    points = {"strategy.lr=0.001": TRUTH, "strategy.lr=0.01": wrong_first(3)}
    for n, (lr, pred) in enumerate((lr, pred) for lr, pred in points.items() for _ in range(2)):
        run_dir = make_run(root, str(n), "A", n % 2, pred)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["overrides"] = [lr, f"seed={n % 2}", "sweep=study_grid", "data=folder"]
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    runs, _ = collect_runs([root])
    table = summarise(runs, bootstrap=200)
    assert [row.approach for row in table.rows] == ["A strategy.lr=0.001", "A strategy.lr=0.01"]
    assert [len(row.seeds) for row in table.rows] == [2, 2]  # seeds pooled per point
    for run_dir in root.iterdir():  # validation says the worse-on-test point is better
        metrics = json.loads((run_dir / "metrics.json").read_text())
        val = 0.9 if "strategy.lr=0.01" in metrics["overrides"] else 0.5
        metrics["val"] = {"landmark": {"macro_f1": val}}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    ranked = summarise(collect_runs([root])[0], bootstrap=200)
    assert [row.approach for row in ranked.rows] == ["A strategy.lr=0.01", "A strategy.lr=0.001"]
    assert ranked.rows[0].val_landmark_f1 == pytest.approx(0.9)
    for run_dir in root.iterdir():  # the runs kept checkpoints by category accuracy
        metrics = json.loads((run_dir / "metrics.json").read_text())
        accuracy = 0.4 if "strategy.lr=0.01" in metrics["overrides"] else 0.8
        metrics["val"]["category"] = {"accuracy": accuracy}
        metrics["stages"] = [{"name": "joint", "monitor": "val/category_acc"}]
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    by_monitor = summarise(collect_runs([root])[0], bootstrap=200)
    assert [row.approach for row in by_monitor.rows] == [
        "A strategy.lr=0.001",
        "A strategy.lr=0.01",
    ]
    assert by_monitor.ranked_by == "validation val/category_acc"
    assert "Best by validation val/category_acc: **A strategy.lr=0.001** (0.800)" in (
        markdown_table(by_monitor)
    )


def test_holm_adjust_on_a_constructed_case():
    from landmark_tl.evaluation.stats import holm_adjust

    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p <= 0.05 for p in adjusted] == [True, False, False, True]  # all 4 below 0.05 raw
    assert holm_adjust([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([]) == []


def test_bootstrap_p_value_counts_both_sides():
    from landmark_tl.evaluation.stats import bootstrap_p_value

    differences = np.r_[np.full(14, -0.01), np.full(985, 0.02)]  # 14 of 999 below 0
    assert bootstrap_p_value(differences) == pytest.approx(2 * 15 / 1000)
    assert bootstrap_p_value(-differences) == pytest.approx(2 * 15 / 1000)
    assert bootstrap_p_value(np.zeros(99)) == 1.0


def test_verdicts_against_the_best_are_holm_corrected():
    """Three rows each worse than the best with p = 0.03 (uncorrected: 'worse') are tied
    after Holm over the 3 comparisons; a row with p = 0.002 stays worse."""
    from landmark_tl.reporting.report import _Samples, _task_scores

    best = np.full(999, 0.9)

    def row(below_zero: int, f1: float) -> _Samples:
        diff = np.r_[np.full(below_zero, -0.01), np.full(999 - below_zero, 0.05)]
        return _Samples(np.array([f1]), best - diff, (("x",),), {("x",): f1})

    samples = {"top": _Samples(np.array([0.9]), best, (("x",),), {("x",): 0.9})}
    samples |= {name: row(14, 0.86) for name in ("b", "c", "d")}
    samples["e"] = row(0, 0.85)
    scores = _task_scores(samples, "top", probe=None)
    assert [scores[n].comparison.p_value for n in "bcde"] == pytest.approx([0.03] * 3 + [0.002])
    assert [scores[n].mark for n in "bcde"] == [SAME, SAME, SAME, WORSE]
    assert scores["b"].p_holm == pytest.approx(0.09) and scores["e"].p_holm == pytest.approx(0.008)
    assert all(scores[n].comparison.distinguishable for n in "bcde")  # raw CIs exclude 0


def test_rows_are_compared_with_the_linear_probe(multirun: Path) -> None:
    make_run(multirun, "p0", "linear_probe", 0, wrong_first(1))
    table = summarise(collect_runs([multirun])[0], bootstrap=400)
    assert table.probe == "linear_probe"
    rows = {row.approach: row for row in table.rows}
    versus = rows["A"].scores["landmark"].vs_probe
    assert versus.diff == pytest.approx(1.0 - rows["linear_probe"].scores["landmark"].mean)
    assert versus.verdict == ABOVE_PROBE and versus.diff_low > 0
    assert rows["B"].scores["landmark"].vs_probe.diff < 0
    assert rows["linear_probe"].scores["landmark"].vs_probe is None
    markdown = markdown_table(table)
    assert "vs linear probe" in markdown and "Holm's step-down correction" in markdown
    assert "3 rows compared per task" in markdown
    assert f"{versus.diff:+.3f} [{versus.diff_low:+.3f}, {versus.diff_high:+.3f}]" in markdown
    columns = next(csv.reader(io.StringIO(csv_table(table))))
    assert "landmark_f1_vs_probe_diff" in columns and "landmark_f1_p_holm" in columns


def test_split_seeds_are_a_resampling_level(tmp_path: Path) -> None:
    """A wins split 0 and B split 1: one row each over both splits, paired, tied, each
    first on one split; the interval covers both splits' scores."""
    split_paths = {0: PATHS, 1: [f"s1_{i:02d}.png" for i in range(20)]}
    preds = {("A", 0): TRUTH, ("A", 1): wrong_first(2), ("B", 0): wrong_first(2), ("B", 1): TRUTH}
    for n, ((approach, split), pred) in enumerate(preds.items()):
        for seed in (0, 1):
            run_dir = make_run(tmp_path, f"{n}{seed}", approach, seed, pred, split_paths[split])
            metrics = json.loads((run_dir / "metrics.json").read_text())
            metrics["overrides"] = [f"+approach={approach}", f"data.split.seed={split}"]
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
    table = summarise(collect_runs([tmp_path])[0], bootstrap=400)
    assert table.splits == 2 and [len(row.seeds) for row in table.rows] == [4, 4]
    for row in table.rows:
        score = row.scores["landmark"]
        assert score.mean == pytest.approx(0.8) and not score.fallback
        # a quarter of the resamples draw the perfect split twice, a quarter the other one
        assert score.ci_low < 0.6 and score.ci_high == pytest.approx(1.0)
        assert row.first_in == 1
    assert sorted(row.scores["landmark"].mark for row in table.rows) == sorted([BEST, SAME])
    markdown = markdown_table(table)
    assert "over 2 splits" in markdown and "First on" in markdown and "| 1/2 |" in markdown
