"""The recommendation: chosen on validation only (poisoned test labels change nothing), its
expected gain over the probe, and a plain statement when nothing beats the probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from landmark_tl import compose
from landmark_tl.reporting.render import markdown_table
from landmark_tl.reporting.report import summarise
from landmark_tl.reporting.report_latex import latex_table
from landmark_tl.runs.rundir import collect_runs
from tests.conftest import REPO_ROOT, TINY_OVERRIDES
from tests.reporting.test_report import (
    LANDMARKS,
    PATHS,
    TRUTH,
    make_run,
    write_predictions,
    wrong_first,
)

SPLITS = {s: [f"s{s}_{p}" for p in PATHS] for s in range(3)}


def make_runs(root: Path, val: dict[str, float], test_wrong: dict[str, int]) -> None:
    """Approaches × 3 splits: validation landmark F1 as given, test predictions with the
    first ``test_wrong[approach]`` images of each landmark wrong."""
    for approach in val:
        for split, paths in SPLITS.items():
            run_dir = make_run(
                root, f"{approach}_{split}", approach, 0, wrong_first(test_wrong[approach]), paths
            )
            metrics = json.loads((run_dir / "metrics.json").read_text())
            metrics["val"] = {"landmark": {"macro_f1": val[approach]}}
            metrics["overrides"] = [f"+approach={approach}", f"data.split.seed={split}"]
            f1 = 1.0 - 0.2 * test_wrong[approach]  # near enough for the test (unused by choice)
            metrics["test"] = {"landmark": {"macro_f1": f1}}
            (run_dir / "metrics.json").write_text(json.dumps(metrics))


def recommendation(root: Path):
    return summarise(collect_runs([root])[0], bootstrap=300).recommendation


def test_the_choice_is_made_on_validation_and_gains_are_measured_on_test(tmp_path: Path):
    # "knn" is best on validation; "heads" is best on test but worse on validation
    make_runs(
        tmp_path,
        val={"linear_probe": 0.6, "knn": 0.8, "heads": 0.7},
        test_wrong={"linear_probe": 2, "knn": 1, "heads": 0},
    )
    rec = recommendation(tmp_path)
    assert rec.approach == "knn" and rec.beats_probe
    assert rec.gain > 0 and rec.gain_low > 0 and rec.verdict == "> probe"
    assert (rec.wins, rec.splits) == (3, 3)
    table = summarise(collect_runs([tmp_path])[0], bootstrap=300)
    markdown = markdown_table(table)
    assert "**Deploy `knn`**" in markdown and "above the probe on 3 of 3 split(s)" in markdown
    latex = latex_table(table)
    gain = f"{rec.gain:+.3f} [{rec.gain_low:+.3f}, {rec.gain_high:+.3f}]"
    assert (
        "Recommended (chosen on validation landmark macro F1): knn, test gain over the probe "
        f"{gain}, above it on 3 of 3 split(s).}}" in latex
    )


def test_poisoned_test_labels_do_not_change_the_choice(tmp_path: Path):
    make_runs(
        tmp_path,
        val={"linear_probe": 0.6, "knn": 0.8, "heads": 0.7},
        test_wrong={"linear_probe": 2, "knn": 1, "heads": 0},
    )
    before = recommendation(tmp_path)
    # poison every test label and test score: knn's test predictions now all wrong, the
    # probe's all right, and metrics.json's test scores say the opposite of before
    poisoned = [LANDMARKS[(LANDMARKS.index(t) + 1) % 4] for t in TRUTH]
    for run_dir in tmp_path.iterdir():
        approach, split = run_dir.name.rsplit("_", 1)
        pred = TRUTH if approach == "knn" else poisoned
        write_predictions(run_dir, poisoned, pred, SPLITS[int(split)])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["test"]["landmark"]["macro_f1"] = 1.0 - metrics["test"]["landmark"]["macro_f1"]
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    after = recommendation(tmp_path)
    assert after.approach == before.approach == "knn"
    assert after.gain < 0 < before.gain  # the gain is measured on test, the choice is not


def test_nothing_beats_the_probe_is_said_plainly(tmp_path: Path):
    make_runs(
        tmp_path, val={"linear_probe": 0.8, "knn": 0.8}, test_wrong={"linear_probe": 1, "knn": 0}
    )
    table = summarise(collect_runs([tmp_path])[0], bootstrap=300)
    assert table.recommendation.approach == "linear_probe"
    assert not table.recommendation.beats_probe
    assert "nothing beats the linear probe" in markdown_table(table)
    assert r"linear\_probe; nothing beats the linear probe.}" in latex_table(table)


def test_an_approach_not_run_on_the_probes_splits_is_not_a_candidate(tmp_path: Path):
    make_runs(
        tmp_path, val={"linear_probe": 0.6, "knn": 0.7}, test_wrong={"linear_probe": 2, "knn": 1}
    )
    run_dir = make_run(tmp_path, "heads_0", "heads", 0, TRUTH, PATHS)  # another test set
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["val"] = {"landmark": {"macro_f1": 0.95}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert recommendation(tmp_path).approach == "knn"


def test_no_probe_no_recommendation(tmp_path: Path):
    make_runs(tmp_path, val={"knn": 0.8, "heads": 0.7}, test_wrong={"knn": 0, "heads": 1})
    table = summarise(collect_runs([tmp_path])[0], bootstrap=300)
    assert table.recommendation is None and "Recommendation" not in markdown_table(table)


@pytest.mark.parametrize("approach", ["knn", "arcface", "arcface_knn"])
def test_the_candidates_compose(approach: str):
    config = compose([f"+approach={approach}"])
    assert config.strategy.name == approach.split("_")[0]
    assert config.strategy.approach == {"arcface_knn": "arcface (knn)"}.get(approach, approach)
    if approach == "arcface_knn":  # its own embedding: without one it would be knn
        assert config.strategy.embedding == 512


@pytest.mark.slow  # a multirun through a launcher
def test_experiment_recommend_runs_and_the_report_recommends(tiny_tree, tmp_path: Path):
    """experiment=recommend as a user runs it (its candidate list and splits narrowed on the
    command line to keep the test short), then the report's recommendation."""
    env = {**os.environ, "LANDMARK_TL_CACHE": str(tmp_path / "cache")}
    train = [sys.executable, "-m", "landmark_tl.train", "-m", "experiment=recommend"]
    args = [
        *TINY_OVERRIDES,
        f"data.root={tiny_tree}",
        f"paths.output_dir={tmp_path / 'out'}",
        "+approach=linear_probe,arcface_knn",
        "data.split.seed=0,1",
        "strategy.stages.landmark.epochs=2",
    ]
    done = subprocess.run(
        [*train, *args], capture_output=True, text=True, env=env, timeout=600, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs, skipped = collect_runs([tmp_path / "out"])
    assert len(runs) == 4 and not skipped
    table = summarise(runs, bootstrap=200)
    assert {row.approach for row in table.rows} == {"linear_probe", "arcface (knn)"}
    assert table.recommendation is not None and table.recommendation.splits == 2
    assert "## Recommendation" in markdown_table(table)
