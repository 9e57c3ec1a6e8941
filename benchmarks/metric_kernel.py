"""The report's bootstrap of macro F1 and the heads' metric counting, timed (issue 27).

    PYTHONPATH=. python benchmarks/metric_kernel.py [--rounds 5] [--threads 2]

Prints one JSON line per case: the best and median seconds over the rounds. Run it with
PYTHONPATH on two trees (e.g. before and after a change to evaluation/counts.py) to
compare them side by side; only public functions that both trees have are called:

- ``bootstrap``: ``seed_averaged_f1`` as ``landmark-tl report`` calls it per approach and
  task (2 seeds, 2000 stratified resamples of the test images), at the embedded set's
  scale (20 landmarks, 120 test images), at 1k landmarks (5k images, 500 resamples) and at
  10k landmarks (20k images, 100 resamples);
- ``summarise``: ``landmark_tl.reporting.report.summarise`` end to end on 4 synthetic
  runs (2 approaches x 2 seeds) of 1k landmarks and 5k test images, 2000 resamples;
- ``heads``: the macro F1 and accuracy of 27 members' (27, N) validation predictions, as
  the heads launcher logs them each epoch (``VectorisedStage.rows``; N = 120 and 5k).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _timed(fn: Callable[[], object], rounds: int) -> dict[str, float]:
    fn()  # warm-up
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {"best_s": min(seconds), "median_s": statistics.median(seconds)}


def _labels(rng: np.random.Generator, classes: int, per_class: int) -> tuple[np.ndarray, ...]:
    true = np.repeat(np.arange(classes), per_class)
    pred = np.where(rng.random(len(true)) < 0.7, true, rng.integers(0, classes, len(true)))
    return pred, true


def bootstrap_cases(rounds: int) -> list[dict]:
    from landmark_tl.evaluation.stats import resample_indices, seed_averaged_f1

    out = []
    for classes, per_class, resamples in ((20, 6, 2000), (1000, 5, 500), (10_000, 2, 100)):
        rng = np.random.default_rng(0)
        seeds = [_labels(rng, classes, per_class) for _ in range(2)]
        draws = resample_indices(seeds[0][1], resamples, rng)

        def run(seeds=seeds, draws=draws, classes=classes) -> None:
            seed_averaged_f1(seeds, [draws, draws], classes, np.random.default_rng(1))

        case = f"bootstrap {classes} classes x {classes * per_class} images x {resamples}"
        out.append({"case": case, **_timed(run, rounds)})
    return out


def summarise_case(rounds: int) -> dict:
    from landmark_tl.reporting.report import summarise
    from landmark_tl.runs.rundir import collect_runs

    classes, per_class = 1000, 5
    rng = np.random.default_rng(0)
    names = [f"c{i // 10:03d}/l{i:04d}" for i in range(classes)]
    with tempfile.TemporaryDirectory() as tmp:
        for r, (approach, seed) in enumerate([("A", 0), ("A", 1), ("B", 0), ("B", 1)]):
            pred, true = _labels(rng, classes, per_class)
            run_dir = Path(tmp) / f"run{r}"
            run_dir.mkdir()
            with open(run_dir / "predictions.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(
                    ["path"]
                    + [
                        f"{c}_{t}"
                        for t in ("category", "landmark")
                        for c in ("true", "pred", "prob")
                    ]
                )
                for i, (t, p) in enumerate(zip(true, pred, strict=True)):
                    tc, pc = names[t].split("/")[0], names[p].split("/")[0]
                    writer.writerow([f"img{i:05d}.jpg", tc, pc, 0.9, names[t], names[p], 0.8])
            metrics = {"approach": approach, "strategy": "multi_output", "seed": seed}
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
        runs, _ = collect_runs([tmp])
        timed = _timed(lambda: summarise(runs, bootstrap=2000), rounds)
    return {"case": "summarise 4 runs x 1000 classes x 5000 images x 2000", **timed}


def heads_cases(rounds: int) -> list[dict]:
    """The launcher's per-epoch scoring of 27 members (``VectorisedStage.rows``)."""
    from landmark_tl.sweep.vectorised import VectorisedStage

    out = []
    for classes, per_class in ((20, 6), (1000, 5)):
        rng = np.random.default_rng(0)
        true = torch.from_numpy(np.repeat(np.arange(classes), per_class))
        preds = torch.stack(
            [torch.from_numpy(_labels(rng, classes, per_class)[0]) for _ in range(27)]
        )
        stage = VectorisedStage.__new__(VectorisedStage)  # only what ``rows`` reads
        stage.modules = [None] * 27
        stage.tasks = ("landmark",)
        stage.template = type("Template", (), {"num_classes": {"landmark": classes}})()
        split = type("Split", (), {"targets": {"landmark": true}})()
        total, per_task = torch.zeros(27), {"landmark": torch.zeros(27)}

        def run(stage=stage, split=split, preds=preds, total=total, per_task=per_task) -> None:
            stage.rows("val", split, {"landmark": preds}, total, per_task)

        case = f"heads rows 27 members x {classes} classes x {len(true)} images"
        out.append({"case": case, **_timed(run, rounds)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import landmark_tl

    print(json.dumps({"tree": str(Path(landmark_tl.__file__).parents[1])}))
    for result in [
        *bootstrap_cases(args.rounds),
        summarise_case(args.rounds),
        *heads_cases(args.rounds),
    ]:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
