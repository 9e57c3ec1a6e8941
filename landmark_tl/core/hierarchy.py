"""LabelHierarchy: category and landmark names and the landmark → category map."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from landmark_tl.core.io import printable

TASKS = ("category", "landmark")
"""The two levels, coarse first; every per-task mapping uses these names."""


@dataclass(frozen=True)
class LabelHierarchy:
    """Two-level label space. A landmark's identity is the pair (category, landmark).

    Categories are sorted by name; landmarks are sorted by (category, landmark), so the
    landmarks of one category are contiguous and indices are stable for a given tree.
    """

    categories: tuple[str, ...]
    landmarks: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        known = set(self.categories)
        orphans = [pair for pair in self.landmarks if pair[0] not in known]
        if orphans:
            raise ValueError(f"landmarks {orphans[:3]} name categories not in {self.categories}")
        if len(set(self.landmarks)) != len(self.landmarks):
            raise ValueError("duplicate (category, landmark) pairs in the hierarchy")
        empty = known - {category for category, _ in self.landmarks}
        if empty:
            raise ValueError(f"categories without landmarks: {sorted(empty)}")

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> LabelHierarchy:
        """Build from (category, landmark) pairs in any order, duplicates allowed."""
        landmarks = tuple(sorted(set(pairs)))
        return cls(tuple(sorted({c for c, _ in landmarks})), landmarks)

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    @property
    def num_landmarks(self) -> int:
        return len(self.landmarks)

    @property
    def landmark_to_category(self) -> tuple[int, ...]:
        """Category index of each landmark index."""
        index = {name: i for i, name in enumerate(self.categories)}
        return tuple(index[category] for category, _ in self.landmarks)

    def parent_tensor(self) -> torch.Tensor:
        """``landmark_to_category`` as a LongTensor, for indexing predictions."""
        return torch.tensor(self.landmark_to_category, dtype=torch.long)

    def category_index(self, category: str) -> int:
        return self.categories.index(category)

    def landmark_index(self, category: str, landmark: str) -> int:
        return self.landmarks.index((category, landmark))

    @property
    def category_names(self) -> list[str]:
        """Printable category names."""
        return [printable(c) for c in self.categories]

    @property
    def landmark_names(self) -> list[str]:
        """Printable landmark names, ``Category/Landmark``."""
        return [f"{printable(c)}/{printable(lm)}" for c, lm in self.landmarks]

    def names(self) -> dict[str, list[str]]:
        """Printable class names of each task, by task name."""
        return {"category": self.category_names, "landmark": self.landmark_names}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; undecodable bytes are kept as surrogate escapes."""
        return {"categories": list(self.categories), "landmarks": [list(p) for p in self.landmarks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelHierarchy:
        return cls(tuple(data["categories"]), tuple((c, lm) for c, lm in data["landmarks"]))
