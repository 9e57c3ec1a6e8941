"""Long-tailed data: leave out landmarks with too few images, score by training frequency.

Real landmark collections are long-tailed (most GLDv2 landmarks have fewer than 10 photos).
``data.min_images_per_landmark`` drops smaller landmarks, and ``data.split.small=drop`` those
too small for the split; both are listed in the catalog's ``dropped`` (data_report.md and
metrics.json), never left out silently.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import torch

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.data.catalog import Catalog
from landmark_tl.data.records import CatalogError, DroppedLandmark, show
from landmark_tl.data.splits import SmallLandmarks, SplitSpec

# Lower edges of the frequency buckets: landmarks with 1–4, 5–19 and 20+ training images.
BUCKET_EDGES = (1, 5, 20)


def drop_small_landmarks(catalog: Catalog, min_images: int, split: SplitSpec) -> Catalog:
    """``catalog`` without landmarks under ``min_images`` images (and, with
    ``split.small=drop``, those too small for the split); refuses to leave nothing."""
    if min_images < 1:
        raise ValueError(f"data.min_images_per_landmark={min_images}: must be >= 1")
    counts = Counter((r.category, r.landmark) for r in catalog.records)
    dropped = {}
    for (category, landmark), n in sorted(counts.items()):
        if n < min_images:
            reason = f"{n} images, fewer than data.min_images_per_landmark={min_images}"
        elif split.small is SmallLandmarks.drop and split.too_small(n):
            reason = (
                f"{n} images, too few for data.split.val={split.val} + data.split.test="
                f"{split.test} + 1 train (data.split.small=drop)"
            )
        else:
            continue
        dropped[(category, landmark)] = DroppedLandmark(category, landmark, n, reason)
    if not dropped:
        return catalog
    records = [r for r in catalog.records if (r.category, r.landmark) not in dropped]
    if not records:
        raise CatalogError(
            f"{show(catalog.root)}: no landmark is left: data.min_images_per_landmark="
            f"{min_images} and data.split.small={split.small.value} drop all "
            f"{len(counts)} (the largest has {max(counts.values())} images); lower "
            "data.min_images_per_landmark or use data.split.small=train_only"
        )
    return dataclasses.replace(
        catalog,
        records=records,
        hierarchy=LabelHierarchy.from_pairs((r.category, r.landmark) for r in records),
        digests={r.path: catalog.digests[r.path] for r in records if r.path in catalog.digests},
        dropped=[*catalog.dropped, *dropped.values()],
    )


def bucket_name(lower: int, upper: int | None) -> str:
    return f"{lower}+" if upper is None else f"{lower}-{upper - 1}"


def frequency_bucket_scores(
    train_counts: torch.Tensor,
    preds: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    edges: Sequence[int] = BUCKET_EDGES,
) -> dict[str, dict[str, float | int]]:
    """Test accuracy of each task on the images of landmarks grouped by training images.

    ``train_counts[l]`` is landmark ``l``'s number of training images; a bucket holds the
    landmarks with ``edges[i] <= count < edges[i + 1]``. Landmarks without training images
    are in no bucket. Empty buckets are listed with ``n = 0`` and no accuracy.
    """
    per_image = train_counts[targets["landmark"]]
    scores: dict[str, dict[str, float | int]] = {}
    for lower, upper in zip(edges, [*edges[1:], None], strict=True):
        images = _within(per_image, lower, upper)
        entry: dict[str, float | int] = {
            "landmarks": int(_within(train_counts, lower, upper).sum()),
            "n": int(images.sum()),
        }
        if images.any():
            for task in ("landmark", "category"):
                right = preds[task][images] == targets[task][images]
                entry[f"{task}_accuracy"] = float(right.float().mean())
        scores[bucket_name(lower, upper)] = entry
    return scores


def _within(values: torch.Tensor, lower: int, upper: int | None) -> torch.Tensor:
    inside = values >= lower
    return inside if upper is None else inside & (values < upper)
