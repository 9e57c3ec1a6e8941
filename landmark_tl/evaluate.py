"""``python -m landmark_tl.evaluate run=DIR [data.root=OTHER] [out=JSON]``

Scores a finished run's final model on its own test split (from the run's ``split.csv``)
or on another folder tree with the same labels; images whose (category, landmark) the run
does not know are reported and left out. Prints the scores, writes JSON (default
``<run>/evaluation.json``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from landmark_tl.data.catalog import CatalogError, scan_image_folder
from landmark_tl.data.splits import read_split_csv
from landmark_tl.errors import command
from landmark_tl.inference import TrainedRun, load_run
from landmark_tl.io import atomic_write_json, printable
from landmark_tl.metrics import hierarchy_scores, score_predictions
from landmark_tl.predict import output_file, parse_args, predict_files

USAGE = "usage: python -m landmark_tl.evaluate run=DIR [data.root=OTHER] [out=JSON]"


def evaluation_images(run: TrainedRun, other_root: str | None) -> tuple[list, list[str]]:
    """(path, category index, landmark index) to score, and labels the run does not know."""
    from landmark_tl.build import resolve_data_root

    hierarchy = run.hierarchy
    if other_root is None:
        catalog = scan_image_folder(resolve_data_root(run.config))
        assignment = read_split_csv(run.run_dir / "split.csv", catalog)
        records = [r for r, a in zip(catalog.records, assignment, strict=True) if a == "test"]
    else:
        records = scan_image_folder(other_root).records
    known = set(hierarchy.landmarks)
    unknown = sorted(
        {
            f"{printable(r.category)}/{printable(r.landmark)}"
            for r in records
            if (r.category, r.landmark) not in known
        }
    )
    items = [
        (
            r.path,
            hierarchy.category_index(r.category),
            hierarchy.landmark_index(r.category, r.landmark),
        )
        for r in records
        if (r.category, r.landmark) in known
    ]
    return items, unknown


def evaluate(run: TrainedRun, other_root: str | None = None) -> dict[str, Any]:
    """Per-task and hierarchy scores of the run's final model."""
    items, unknown = evaluation_images(run, other_root)
    if not items:
        where = other_root or "the run's test split"
        raise CatalogError(
            f"{where}: no image with a label the run knows: nothing to evaluate; give "
            "data.root= a tree with the run's <category>/<landmark> folders"
        )
    predictions, skipped = predict_files(run, [path for path, _, _ in items], top_k=1)
    index = {"category": run.hierarchy.category_names, "landmark": run.hierarchy.landmark_names}
    kept = [item for item in items if item[0] not in {p for p, _ in skipped}]
    targets = {
        "category": torch.tensor([c for _, c, _ in kept]),
        "landmark": torch.tensor([lm for _, _, lm in kept]),
    }
    preds = {
        task: torch.tensor([index[task].index(getattr(p, task)) for p in predictions])
        for task in ("category", "landmark")
    }
    return {
        "run": str(run.run_dir),
        "data": other_root or "the run's own test split",
        "test": {t: score_predictions(preds[t], targets[t], len(index[t])) for t in preds},
        "hierarchy": hierarchy_scores(preds, targets, run.hierarchy.parent_tensor()),
        "unknown_labels": unknown,
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
    }


@command
def main(argv: list[str]) -> int:
    args = parse_args(argv, ("run", "data.root", "out"), ("run",), USAGE)
    out = output_file(args, Path(args["run"][-1]) / "evaluation.json")
    run = load_run(args["run"][-1])
    result = evaluate(run, args.get("data.root", [None])[-1])
    atomic_write_json(out, result)
    for task, s in result["test"].items():
        print(
            f"{task:<9} macro F1 {s['macro_f1']:.3f}   accuracy {s['accuracy']:.3f}   (n={s['n']})"
        )
    for label in result["unknown_labels"]:
        print(f"unknown label, not scored: {label}", file=sys.stderr)
    print(f"written to {printable(str(out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
