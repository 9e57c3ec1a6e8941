"""Hierarchy-aware scores (Bertinetto et al. 2020, "Making Better Mistakes").

The label tree has three levels: a root, the categories, the landmarks (leaves). The
*tree distance* of two landmarks is the height of their lowest common ancestor, leaves at
height 0:

    0  the same landmark
    1  another landmark of the same category (the LCA is the category)
    2  a landmark of another category (the LCA is the root)

*Mistake severity* is the mean tree distance between the predicted and the true landmark
over the wrongly predicted images (so it lies in [1, 2]; NaN without a mistake).
*Hierarchical distance@k* is, per image, the mean tree distance between the true landmark
and each of the k highest-ranked landmarks, averaged over images (Bertinetto's
"average hierarchical distance of top-k"); @1 is the mean tree distance of the prediction
over all images, right ones counting 0.

The ranking starts with the landmark the strategy predicts (its decoded prediction, which
macro F1 scores too; e.g. ``hierarchical`` decodes top down), followed by the others in
order of probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

HIERARCHY_TOP_K = (1, 5)  # the k of the distance@k scores written to metrics.json


def tree_distance(a: torch.Tensor, b: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Height of the lowest common ancestor of landmarks ``a`` and ``b`` (broadcast):
    0 same landmark, 1 same category, 2 different category. ``parent[l]`` is the category
    of landmark ``l``."""
    a, b, parent = a.long(), b.long(), parent.long()
    same_category = parent[a] == parent[b]
    return torch.where(a == b, 0, torch.where(same_category, 1, 2))


def ranked_landmarks(preds: torch.Tensor, probs: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) landmarks per image: the predicted one first, then the most probable others
    (k capped at the number of landmarks)."""
    k = min(k, probs.shape[1])
    boosted = probs.float().clone()
    boosted.scatter_(1, preds.long()[:, None], float("inf"))
    return boosted.topk(k, dim=1).indices


def distances_at_k(
    ranked: torch.Tensor, targets: torch.Tensor, parent: torch.Tensor
) -> torch.Tensor:
    """(N,) per image: the mean tree distance of its ranked landmarks (N, k) to its target."""
    return tree_distance(ranked, targets.long()[:, None], parent).float().mean(dim=1)


def mistake_severity(preds: torch.Tensor, targets: torch.Tensor, parent: torch.Tensor) -> float:
    """Mean tree distance over the images whose landmark is wrong; NaN when none is."""
    distance = tree_distance(preds, targets, parent)
    wrong = distance > 0
    return float(distance[wrong].float().mean()) if bool(wrong.any()) else float("nan")


def hierarchy_aware_scores(
    preds: torch.Tensor,
    targets: torch.Tensor,
    parent: torch.Tensor,
    probs: torch.Tensor | None = None,
    ks: Sequence[int] = HIERARCHY_TOP_K,
) -> dict[str, float]:
    """``mistake_severity`` and ``hierarchical_distance_at_<k>`` of predicted landmarks
    against ``targets``; k > 1 needs the (N, L) landmark probabilities ``probs``."""
    if len(targets) == 0:
        return {}
    scores = {"mistake_severity": mistake_severity(preds, targets, parent)}
    for k in ks:
        if k > 1 and probs is None:
            continue
        ranked = preds.long()[:, None] if k == 1 else ranked_landmarks(preds, probs, k)
        scores[f"hierarchical_distance_at_{k}"] = float(
            distances_at_k(ranked, targets, parent).mean()
        )
    return scores
