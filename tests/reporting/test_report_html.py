"""Self-contained HTML pages (run and comparison), checked in a real headless browser."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest
from PIL import Image

from landmark_tl.commands.report import main
from landmark_tl.reporting.report import summarise
from landmark_tl.reporting.report_html import per_landmark_f1, run_page
from landmark_tl.runs.rundir import collect_runs
from landmark_tl.training.run import train
from tests.evaluation.test_hierarchy_metrics import write_distances
from tests.reporting.test_plots import run_dir as run_dir  # noqa: F401 (the fixture)
from tests.reporting.test_recommendation import make_runs
from tests.reporting.test_report import LANDMARKS, PATHS, TRUTH, make_run, wrong_first

# Appended to a copy of a page: on load, whether every image decoded, into the DOM.
IMAGE_CHECK = """<script>window.addEventListener("load", () => {
  document.body.dataset.images = [...document.images]
    .map(i => i.complete && i.naturalWidth > 0 ? "ok" : "broken:" + i.alt).join(" ");
});</script>"""


def chromium() -> str:
    """Debian's chromium (.ci/run installs it); without it the test fails, never skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium chromium-driver")
    return found


def open_in_browser(page: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """Load ``page`` in headless chromium with the network off: (each image's load state,
    the console messages the page caused)."""
    checked = tmp_path / f"checked-{page.name}"
    checked.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: nothing may be fetched
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    states = re.search(r'data-images="([^"]*)"', done.stdout)
    assert states is not None, "the page did not finish loading"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return states.group(1).split(), console


def write_images(root: Path, paths: list[str]) -> None:
    for i, path in enumerate(paths):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 32), (40 * (i % 6), 90, 200)).save(root / path)


def test_per_landmark_f1_lowest_first() -> None:
    scores = per_landmark_f1(TRUTH, wrong_first(2), LANDMARKS)
    assert [name for name, *_ in scores] == sorted(LANDMARKS)  # all tied: by name
    name, support, precision, recall, f1 = scores[0]
    assert support == 5 and (precision, recall, f1) == pytest.approx((0.6, 0.6, 0.6))


def test_run_page_is_self_contained(run_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    images = tmp_path / "images"
    write_images(images, PATHS[1:])  # the first (misclassified) image is gone: it says so
    metrics = {
        "approach": "A",
        "backbone": "tf_efficientnet_lite0",
        "data": {"source": "folder", "root": str(images), "images": 40},
        "test": {"landmark": {"macro_f1": 0.6, "accuracy": 0.6}},
        "severity": {"mean_tree_distance": 0.8, "per_level": [{"level": "category", "n": 8}]},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    html = run_page(run_dir)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched
    assert html.count("data:image/png;base64,") == 4  # 2 curves, 2 confusion matrices
    assert html.count("data:image/jpeg;base64,") == 7  # 8 mistakes, one image gone
    assert "8 of 8 misclassified test images" in html and "image not found" in html
    assert "<h3>severity</h3>" in html and "mean_tree_distance" in html  # generic section
    assert '<td class="l">category</td><td>8</td>' in html  # a list of records: a table
    assert "Per-landmark F1 (lowest first)" in html


def test_comparison_and_run_pages_render_in_a_browser(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, PATHS)
    runs = tmp_path / "multirun"
    for n, (approach, pred) in enumerate(
        [("A", TRUTH), ("A", wrong_first(1)), ("B", wrong_first(2))]
    ):
        run = make_run(runs, str(n), approach, n, pred)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["data"] |= {"root": str(images), "source": "folder"}
        (run / "metrics.json").write_text(json.dumps(metrics))
    assert main([f"runs={runs}", "bootstrap=50"]) == 0
    out = tmp_path / "multirun-report"
    page = (out / "report.html").read_text()
    assert "<h2>Table 1</h2>" in page and "Per-split results" in page
    assert 'href="runs/0.html"' in page and (out / "runs" / "2.html").is_file()
    assert "≈ best" in page or "worse" in page
    for html in (out / "report.html", out / "runs" / "2.html"):
        states, console = open_in_browser(html, tmp_path)
        assert states and all(state == "ok" for state in states), states
        assert console == []


def test_a_trained_run_writes_its_page_with_the_gallery(tiny_config, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config("extras.plots=true"), run_dir)
    header = (run_dir / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"landmark_top1", "landmark_top2", "landmark_top3"} <= set(header)
    states, console = open_in_browser(run_dir / "report.html", tmp_path)
    html = (run_dir / "report.html").read_text()
    mistakes = int(re.search(r"(\d+) of \d+ misclassified", html).group(1))
    assert mistakes > 0
    assert len(states) == 3 + mistakes and set(states) == {"ok"}  # curves, 2 matrices, thumbnails
    assert console == []


def test_the_recommendation_and_the_mistake_scores_reach_the_html_and_the_csv(tmp_path: Path):
    """knn is best on validation and makes half the probe's mistakes (all into the other
    category, tree distance 2): report.html and table1.csv carry the recommendation and
    the mistake severity and distance@k with their intervals and verdicts, as table1.md."""
    runs = tmp_path / "multirun"
    wrong = {"linear_probe": 2, "knn": 1}
    make_runs(runs, val={"linear_probe": 0.6, "knn": 0.8}, test_wrong=wrong)
    for run in runs.iterdir():
        write_distances(run, wrong_first(wrong[run.name.rsplit("_", 1)[0]]))
    assert main([f"runs={runs}", "bootstrap=300"]) == 0
    out = tmp_path / "multirun-report"
    page = (out / "report.html").read_text()
    assert "<h2>Recommendation</h2>" in page and "<b>Deploy <code>knn</code></b>" in page
    assert "above the probe on 3 of 3 split(s)" in page
    assert "<h2>How bad the mistakes are (tree distance; lower is better)</h2>" in page
    table = summarise(collect_runs([runs])[0], bootstrap=300)  # the report's own numbers
    knn = table.mistakes["knn"]
    assert knn["hierarchical_distance_at_1"].mean == pytest.approx(4 * 2 / 20)
    assert table.mistakes["linear_probe"]["hierarchical_distance_at_1"].mean == pytest.approx(0.8)
    for score in knn.values():
        diff, low, high, _ = score.vs_probe
        cells = f"<td>{score.mean:.3f}</td><td>[{score.ci_low:.3f}, {score.ci_high:.3f}]</td>"
        versus = escape(f"{diff:+.3f} [{low:+.3f}, {high:+.3f}] {score.verdict}")
        assert f"{cells}<td>{versus}</td>" in page
    rows = {r["approach"]: r for r in csv.DictReader((out / "table1.csv").open())}
    assert (rows["knn"]["recommended"], rows["linear_probe"]["recommended"]) == ("1", "0")
    assert rows["knn"]["recommended_splits_above_probe"] == "3/3"
    assert rows["linear_probe"]["recommended_splits_above_probe"] == ""
    severity = knn["mistake_severity"]
    assert float(rows["knn"]["mistake_severity_mean"]) == pytest.approx(2.0)
    assert float(rows["knn"]["mistake_severity_ci_high"]) == pytest.approx(severity.ci_high)
    assert float(rows["knn"]["hierarchical_distance_at_1_vs_probe_diff"]) == pytest.approx(-0.4)
    verdict = knn["hierarchical_distance_at_5"].verdict
    assert rows["knn"]["hierarchical_distance_at_5_vs_probe_verdict"] == verdict
    assert rows["linear_probe"]["hierarchical_distance_at_1_vs_probe_p_holm"] == ""
    states, console = open_in_browser(out / "report.html", tmp_path)
    assert states == ["ok"] and console == []  # the bar chart; the new sections parse cleanly
