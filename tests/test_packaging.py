"""A plain (non-editable) wheel carries the configs and trains, predicts and reports from
a folder outside the checkout, through the ``landmark-tl`` console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from landmark_tl.config.schema import CONFIG_DIR
from tests.conftest import REPO_ROOT, TINY_OVERRIDES

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the project (building in place would write into the checkout)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "landmark_tl",
        source / "landmark_tl",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source],
        check=True,
    )
    (wheel,) = wheels.glob("landmark_tl-*.whl")
    return wheel


def test_wheel_installed_without_editable_trains_predicts_and_reports(tmp_path, tiny_tree):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        packed = {n for n in archive.namelist() if n.startswith("landmark_tl/conf/")}
    shipped = {
        f"landmark_tl/conf/{p.relative_to(CONFIG_DIR).as_posix()}"
        for p in CONFIG_DIR.rglob("*.yaml")
    }
    assert shipped and shipped <= packed  # every YAML of the tree is in the wheel

    # On top of the dev venv (torch & co. come from there), not editable, not the checkout.
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "LANDMARK_TL_CACHE": str(tmp_path / "cache"),
    }

    def run(*args: str | Path) -> str:
        done = subprocess.run(
            [str(a) for a in args], cwd=elsewhere, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    where = run(sys.executable, "-c", "import landmark_tl; print(landmark_tl.__file__)")
    assert Path(where.strip()).is_relative_to(site)

    script = site / "bin" / "landmark-tl"
    out = run(script, "train", *TINY_OVERRIDES, f"data.root={tiny_tree}", "hydra.run.dir=run")
    assert "multi_output on tf_efficientnet_lite0" in out
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"category", "landmark"}
    assert (elsewhere / "run" / ".hydra" / "config.yaml").is_file()

    image = next(tiny_tree.rglob("*.png"))
    out = run(script, "predict", "run=run", f"inputs={image}", "out=predict.csv")
    assert "1 predicted, 0 skipped" in out and (elsewhere / "predict.csv").is_file()

    out = run(sys.executable, "-m", "landmark_tl", "report", "runs=run", "bootstrap=50")
    assert "| multi_output |" in out and (elsewhere / "run-report" / "table1.md").is_file()
