"""LabelHierarchy: ordering, parent map, validation and serialisation."""

from __future__ import annotations

import json
import re

import pytest
import torch

from landmark_tl.core.hierarchy import LabelHierarchy

PAIRS = [
    ("Pyramids", "Louvre Pyramid"),
    ("Gothic", "Milan Cathedral"),
    ("Pyramids", "Pyramid of Giza"),
    ("Gothic", "Chartres Cathedral"),
    ("Gothic", "Milan Cathedral"),  # duplicate, as one pair per image would give
    ("Modern", "Eiffel Tower"),
]


def test_from_pairs_sorts_and_deduplicates():
    hierarchy = LabelHierarchy.from_pairs(PAIRS)
    assert hierarchy.categories == ("Gothic", "Modern", "Pyramids")
    assert hierarchy.landmarks == (
        ("Gothic", "Chartres Cathedral"),
        ("Gothic", "Milan Cathedral"),
        ("Modern", "Eiffel Tower"),
        ("Pyramids", "Louvre Pyramid"),
        ("Pyramids", "Pyramid of Giza"),
    )
    assert (hierarchy.num_categories, hierarchy.num_landmarks) == (3, 5)
    assert LabelHierarchy.from_pairs(reversed(PAIRS)) == hierarchy


def test_landmark_to_category_and_parent_tensor():
    hierarchy = LabelHierarchy.from_pairs(PAIRS)
    assert hierarchy.landmark_to_category == (0, 0, 1, 2, 2)
    parents = hierarchy.parent_tensor()
    assert parents.dtype == torch.long
    assert parents.tolist() == [0, 0, 1, 2, 2]
    assert hierarchy.category_index("Modern") == 1
    assert hierarchy.landmark_index("Pyramids", "Louvre Pyramid") == 3


def test_same_landmark_name_under_two_categories_is_two_landmarks():
    hierarchy = LabelHierarchy.from_pairs([("Gothic", "Cathedral"), ("Modern", "Cathedral")])
    assert hierarchy.num_landmarks == 2
    assert hierarchy.landmark_index("Gothic", "Cathedral") == 0
    assert hierarchy.landmark_index("Modern", "Cathedral") == 1
    assert hierarchy.landmark_to_category == (0, 1)
    assert hierarchy.landmark_names == ["Gothic/Cathedral", "Modern/Cathedral"]


@pytest.mark.parametrize(
    ("categories", "landmarks", "message"),
    [
        (("Gothic",), (("Modern", "Eiffel Tower"),), "name categories not in"),
        (("Gothic",), (("Gothic", "Dom"), ("Gothic", "Dom")), "duplicate"),
        (("Gothic", "Modern"), (("Gothic", "Dom"),), "categories without landmarks: ['Modern']"),
    ],
)
def test_invalid_hierarchies_are_refused(categories, landmarks, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LabelHierarchy(categories, landmarks)


def test_dict_round_trip_through_json_keeps_undecodable_names():
    raw = b"Hallgr\xa1mskirkja".decode("utf-8", errors="surrogateescape")
    hierarchy = LabelHierarchy.from_pairs([("Modern", raw), ("Neoclassical", "Panth‚on")])
    text = json.dumps(hierarchy.to_dict(), ensure_ascii=False)
    restored = LabelHierarchy.from_dict(json.loads(text))
    assert restored == hierarchy
    assert hierarchy.landmark_names == ["Modern/Hallgr\ufffdmskirkja", "Neoclassical/Panth‚on"]
    assert hierarchy.category_names == ["Modern", "Neoclassical"]
