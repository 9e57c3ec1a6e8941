"""The default run's wall times, cold and warm, and its feature pass, written into README.md.

    python benchmarks/timings.py             # measure, print, update README.md's section
    python benchmarks/timings.py --no-write  # measure and print only

Runs ``python -m landmark_tl.train`` (the defaults: the embedded set, tf_efficientnet_lite0
with its packaged weights, multi_output) twice with one fresh cache folder: cold (the
embedded set generated, every image's features computed) and warm (both found in the
cache). The feature pass is the time the run's own log gives for computing the features;
the load average before and after each run is recorded beside the times, so a reader can
tell a quiet machine's figures from a busy one's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from doc_section import replace_section

REPO = Path(__file__).resolve().parents[1]
PASS_LINE = re.compile(r"computed (\d+) features \((\d+) images\) in ([\d.]+) s")


def default_run(cache: Path, output: Path) -> dict[str, object]:
    """One default training run in a subprocess: wall seconds, the run's own timings, the
    feature pass (None when every feature came from the cache) and the load around it."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "landmark_tl.train", f"paths.output_dir={output}"],
        check=True,
        capture_output=True,
        env={**os.environ, "LANDMARK_TL_CACHE": str(cache)},
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    (run_dir,) = (output / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    found = PASS_LINE.search((run_dir / "train.log").read_text())
    return {
        "wall_s": round(wall, 1),
        **metrics["timings"],
        "feature_pass_s": float(found.group(3)) if found else None,
        "images": int(found.group(2)) if found else metrics["data"]["images"],
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
    }


def measure() -> dict[str, object]:
    """Cold then warm, with one fresh cache; the machine's description."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold = default_run(cache, Path(tmp) / "cold")
        warm = default_run(cache, Path(tmp) / "warm")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), "
        + ("CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
        + f", torch {torch.__version__}",
        "cold": cold,
        "warm": warm,
    }


def markdown(result: dict[str, object]) -> str:
    """The README section: a table of the two runs and how they were measured."""
    rows = []
    for name, what in (
        ("cold", "empty cache: embedded set generated, features computed"),
        ("warm", "the same cache again: data and features read"),
    ):
        r = result[name]
        pass_s = "—" if r["feature_pass_s"] is None else f"{r['feature_pass_s']:.1f}"
        rows.append(
            f"| {name} ({what}) | {r['wall_s']:.1f} | {r['setup_s']:.1f} | {pass_s} | "
            f"{r['train_s']:.1f} | {r['load_before']} → {r['load_after']} |"
        )
    return "\n".join(
        [
            f"Measured by `python benchmarks/timings.py` on {result['date']}, "
            f"{result['machine']}: `landmark-tl train` with the defaults "
            f"({result['cold']['images']} images). Wall time includes starting Python.",
            "",
            "| default run | wall s | setup s | feature pass s | training s | load average |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "A load average above the number of cores means other work shared them: the "
            "times are then longer than on a quiet machine (rerun the script there).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    result = measure()
    print(json.dumps(result, indent=2))
    if not args.no_write:
        replace_section(args.readme, "timings", markdown(result))


if __name__ == "__main__":
    main()
