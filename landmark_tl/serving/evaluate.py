"""``landmark-tl evaluate run=DIR [data.root=OTHER] [out=JSON]`` (or ``python -m``)

Scores a finished run's final model on its own test split (from the run's ``split.csv``)
or on another folder tree with the same labels; images whose (category, landmark) the run
does not know are reported and left out. Prints the scores, writes JSON (default
``<run>/evaluation.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from landmark_tl.core.io import printable
from landmark_tl.data.catalog import scan_image_folder
from landmark_tl.data.records import CatalogError
from landmark_tl.data.splits import read_split_csv
from landmark_tl.evaluation.hierarchy_metrics import distances_at_k, hierarchy_aware_scores
from landmark_tl.evaluation.metrics import (
    TOP_K,
    global_average_precision,
    hierarchy_scores,
    score_predictions,
)
from landmark_tl.serving.inference import Prediction, TrainedRun
from landmark_tl.serving.predict import predict_files


@dataclass
class EvaluateData:
    root: str | None = None  # another folder tree with the run's labels


@dataclass
class EvaluateArgs:
    """The keys of ``landmark-tl evaluate`` (documented in conf/evaluate.yaml)."""

    run: str = MISSING
    data: EvaluateData = field(default_factory=EvaluateData)
    out: str | None = None


ConfigStore.instance().store(name="evaluate_schema", node=EvaluateArgs)


def evaluation_images(
    run: TrainedRun, other_root: str | None
) -> tuple[list, list[str], Callable[[Path], BinaryIO]]:
    """(path, category index, landmark index) to score, labels the run does not know, and
    how to open an image."""
    from landmark_tl.training.build import load_catalog

    hierarchy = run.hierarchy
    if other_root is None:
        catalog = load_catalog(run.config)
        assignment = read_split_csv(run.run_dir / "split.csv", catalog)
        records = [r for r, a in zip(catalog.records, assignment, strict=True) if a == "test"]
    else:
        catalog = scan_image_folder(other_root)
        records = catalog.records
    categories = {name: i for i, name in enumerate(hierarchy.categories)}
    landmarks = {pair: i for i, pair in enumerate(hierarchy.landmarks)}
    unknown = sorted(
        {
            f"{printable(r.category)}/{printable(r.landmark)}"
            for r in records
            if (r.category, r.landmark) not in landmarks
        }
    )
    items = [
        (r.path, categories[r.category], landmarks[(r.category, r.landmark)])
        for r in records
        if (r.category, r.landmark) in landmarks
    ]
    return items, unknown, catalog.open


def evaluate(run: TrainedRun, other_root: str | None = None) -> dict[str, Any]:
    """Per-task and hierarchy scores of the run's final model."""
    items, unknown, open_image = evaluation_images(run, other_root)
    if not items:
        where = other_root or "the run's test split"
        raise CatalogError(
            f"{where}: no image with a label the run knows: nothing to evaluate; give "
            "data.root= a tree with the run's <category>/<landmark> folders"
        )
    predictions, skipped = predict_files(
        run, [path for path, _, _ in items], top_k=TOP_K, open_image=open_image
    )
    skipped_paths = {path for path, _ in skipped}
    kept = [item for item in items if item[0] not in skipped_paths]
    targets = {
        "category": torch.tensor([c for _, c, _ in kept], dtype=torch.long),
        "landmark": torch.tensor([lm for _, _, lm in kept], dtype=torch.long),
    }
    names = run.hierarchy.names()
    preds, test = {}, {}
    for task in targets:
        preds[task], test[task] = score_named_predictions(
            task, predictions, targets[task], names[task]
        )
    return {
        "run": str(run.run_dir),
        "data": other_root or "the run's own test split",
        "test": test,
        "hierarchy": {
            **hierarchy_scores(preds, targets, run.hierarchy.parent_tensor()),
            **hierarchy_aware_from_predictions(
                predictions, targets["landmark"], names["landmark"], run.hierarchy.parent_tensor()
            ),
        },
        "unknown_labels": unknown,
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
    }


def hierarchy_aware_from_predictions(
    predictions: Sequence[Prediction],
    targets: torch.Tensor,
    names: Sequence[str],
    parent: torch.Tensor,
) -> dict[str, float]:
    """Mistake severity and distance@1/@TOP_K of named predictions (their top landmarks
    ranked after the predicted one), as :func:`hierarchy_aware_scores` computes them."""
    index = {name: i for i, name in enumerate(names)}
    ranked = [
        [index[p.landmark]]
        + [index[name] for name, _ in p.top_landmarks if name != p.landmark][: TOP_K - 1]
        for p in predictions
    ]
    scores = hierarchy_aware_scores(torch.tensor([r[0] for r in ranked]), targets, parent, ks=(1,))
    if ranked and len({len(r) for r in ranked}) == 1:
        at_k = distances_at_k(torch.tensor(ranked), targets, parent).mean()
        scores[f"hierarchical_distance_at_{TOP_K}"] = float(at_k)  # k capped, as in training
    return scores


def score_named_predictions(
    task: str, predictions: Sequence[Prediction], targets: torch.Tensor, names: Sequence[str]
) -> tuple[torch.Tensor, dict[str, float]]:
    """One task's predicted indices, and their macro F1, accuracy, top-k accuracy and GAP.

    Names are looked up in a dict, so 10k classes cost no more than 10.
    """
    index = {name: i for i, name in enumerate(names)}
    preds = torch.tensor([index[getattr(p, task)] for p in predictions], dtype=torch.long)
    confidence = torch.tensor([getattr(p, f"{task}_prob") for p in predictions])
    tops = [p.top_categories if task == "category" else p.top_landmarks for p in predictions]
    in_top = [
        any(index[name] == t for name, _ in top)
        for t, top in zip(targets.tolist(), tops, strict=True)
    ]
    scores = score_predictions(preds, targets, len(names))
    n = scores.pop("n")
    scores[f"top{TOP_K}_accuracy"] = sum(in_top) / max(len(in_top), 1)
    scores["gap"] = global_average_precision(preds, confidence, targets)
    scores["n"] = n
    return preds, scores
