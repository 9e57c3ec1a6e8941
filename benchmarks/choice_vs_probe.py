"""Per split: the approach a user would choose on validation, and its test F1 minus the probe's.

    python benchmarks/choice_vs_probe.py outputs/multiruns/<dir> [<dir> ...]

Reads each run's metrics.json in the multirun folders (e.g. of
``experiment=study_table1_splits``) and prints a Markdown table, one row per (data set,
split seed): the approach with the highest validation landmark macro F1 (mean over its
training seeds; ties go to the earlier name in alphabetical order), its test landmark
macro F1, that minus the linear probe's, and the best approach on test in hindsight.
The choice reads only validation scores; test scores are read to report the outcome.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

PROBE = "linear_probe"


def landmark_f1(runs: list[Path]) -> dict[tuple[str, int], dict[str, tuple[float, float]]]:
    """(data set, split seed) -> approach -> (val F1, test F1), means over training seeds."""
    scores: dict[tuple[str, int], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for path in runs:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        split_seed = OmegaConf.load(path.parent / "config.yaml").data.split.seed
        data = Path(metrics["data"]["root"]).name
        scores[data, split_seed][metrics["approach"]].append(
            (metrics["val"]["landmark"]["macro_f1"], metrics["test"]["landmark"]["macro_f1"])
        )
    return {
        key: {a: tuple(np.mean(v, axis=0).tolist()) for a, v in rows.items()}
        for key, rows in scores.items()
    }


def table(scores: dict[tuple[str, int], dict[str, tuple[float, float]]]) -> list[str]:
    lines = [
        "| data | split seed | chosen on val (val F1) | test F1 | − probe | probe test F1 "
        "| best on test (hindsight) | − probe |",
        "|---|--:|---|--:|--:|--:|---|--:|",
    ]
    gaps = []
    for (data, split), rows in sorted(scores.items()):
        chosen = max(sorted(rows), key=lambda a: rows[a][0])
        best = max(sorted(rows), key=lambda a: rows[a][1])
        probe = rows[PROBE][1]
        gaps.append(rows[chosen][1] - probe)
        lines.append(
            f"| {data} | {split} | {chosen} ({rows[chosen][0]:.3f}) | {rows[chosen][1]:.3f} "
            f"| {gaps[-1]:+.3f} | {probe:.3f} | {best} {rows[best][1]:.3f} "
            f"| {rows[best][1] - probe:+.3f} |"
        )
    lines.append("")
    lines.append(
        f"Chosen on validation: mean {np.mean(gaps):+.3f} over the probe, "
        f"≥ probe on {sum(g >= 0 for g in gaps)}/{len(gaps)} splits."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multiruns", nargs="+", type=Path)
    args = parser.parse_args()
    runs = [p for folder in args.multiruns for p in sorted(folder.glob("*/metrics.json"))]
    print("\n".join(table(landmark_f1(runs))))


if __name__ == "__main__":
    main()
