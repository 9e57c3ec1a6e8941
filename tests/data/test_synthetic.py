"""Synthetic monuments: layout, determinism, blueprints and the generate-once cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark_tl.data.synthetic import generate
from landmark_tl.data.synthetic.blueprints import STUDY_LANDMARKS, landmark_blueprint
from landmark_tl.data.synthetic.generate import (
    GENERATOR_VERSION,
    MARKER,
    ensure_synthetic_dataset,
    generate_synthetic_monuments,
)
from landmark_tl.data.synthetic.render import render_monument

SUBSET = {
    "Pagodas": ["Thien Mu Pagoda", "Shwedagon Pagoda"],
    "Pyramids": ["Pyramid of Giza", "Louvre Pyramid"],
}
TINY = {"images_per_landmark": 6, "image_size": 64, "categories": SUBSET}


def _pngs(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _images(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in folder.glob("*.png")])


def test_study_table_has_6_categories_of_5_landmarks_with_distinct_blueprints():
    assert list(STUDY_LANDMARKS) == [
        "Gothic",
        "Modern",
        "Mughal",
        "Neoclassical",
        "Pagodas",
        "Pyramids",
    ]
    for category, landmarks in STUDY_LANDMARKS.items():
        assert len(set(landmarks)) == 5
        blueprints = [landmark_blueprint(category, lm) for lm in landmarks]
        assert {bp.family for bp in blueprints} == {category}
        assert len(set(blueprints)) == 5


def test_other_landmark_names_get_a_stable_blueprint_of_their_family():
    blueprint = landmark_blueprint("Gothic", "Sagrada Familia")
    assert blueprint == landmark_blueprint("Gothic", "Sagrada Familia")
    assert blueprint.family == "Gothic"
    assert blueprint != landmark_blueprint("Gothic", "Westminster Abbey")


def test_layout_is_an_image_folder_of_rgb_pngs(tmp_path: Path):
    generate_synthetic_monuments(tmp_path, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SUBSET)
    for category, landmarks in SUBSET.items():
        assert sorted(p.name for p in (tmp_path / category).iterdir()) == sorted(landmarks)
        for landmark in landmarks:
            files = sorted((tmp_path / category / landmark).iterdir())
            assert [p.name for p in files] == sorted(f"{i}.png" for i in range(6))
            for path in files:
                with Image.open(path) as image:
                    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))


def test_same_seed_gives_identical_bytes_and_another_seed_different_ones(tmp_path: Path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_synthetic_monuments(tmp_path / name, seed=seed, **TINY)
    first, again, other = (_pngs(tmp_path / name) for name in "abc")
    assert len(first) == 24
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[path] != other[path] for path in first)


def test_an_image_depends_only_on_seed_landmark_and_index(tmp_path: Path):
    generate_synthetic_monuments(tmp_path / "subset", **TINY)
    alone = {"Pyramids": ["Louvre Pyramid"]}
    generate_synthetic_monuments(
        tmp_path / "alone", images_per_landmark=6, image_size=64, categories=alone
    )
    subset, single = _pngs(tmp_path / "subset"), _pngs(tmp_path / "alone")
    assert single == {path: subset[path] for path in single}


def test_images_of_one_landmark_vary(tmp_path: Path):
    generate_synthetic_monuments(tmp_path, **TINY)
    assert len(set(_pngs(tmp_path).values())) == 24  # no two images alike
    for category, landmarks in SUBSET.items():
        for landmark in landmarks:
            stack = _images(tmp_path / category / landmark)
            assert stack.std(axis=0).mean() > 5  # viewpoint, scene and light vary


def test_in_the_same_scene_landmarks_differ_and_a_landmark_repeats():
    def photo(category: str, landmark: str) -> np.ndarray:
        rng = np.random.default_rng(7)  # the same scene for every landmark
        image = render_monument(landmark_blueprint(category, landmark), rng, 64)
        return np.asarray(image, dtype=np.float32)

    pairs = [(c, lm) for c, lms in SUBSET.items() for lm in lms]
    photos = [photo(*pair) for pair in pairs]
    assert np.array_equal(photos[0], photo(*pairs[0]))
    gaps = [np.abs(a - b).mean() for i, a in enumerate(photos) for b in photos[i + 1 :]]
    assert min(gaps) > 3


def test_full_table_folder_has_no_subset_suffix(tmp_path: Path):
    root = ensure_synthetic_dataset(tmp_path, images_per_landmark=1, image_size=32, seed=3)
    assert root.name == f"synthetic-monuments-v{GENERATOR_VERSION}-n1-s32-seed3"
    assert sorted(p.name for p in root.iterdir()) == sorted([MARKER, *STUDY_LANDMARKS])
    assert len(list(root.rglob("*.png"))) == 30
    shuffled = {c: list(reversed(lms)) for c, lms in reversed(STUDY_LANDMARKS.items())}
    same = ensure_synthetic_dataset(
        tmp_path, images_per_landmark=1, image_size=32, seed=3, categories=shuffled
    )
    assert same == root


def test_subsets_get_their_own_folder(tmp_path: Path):
    root = ensure_synthetic_dataset(tmp_path, **TINY)
    other = ensure_synthetic_dataset(
        tmp_path, images_per_landmark=6, image_size=64, categories={"Pagodas": ["Thien Mu Pagoda"]}
    )
    base = f"synthetic-monuments-v{GENERATOR_VERSION}-n6-s64-seed0-subset"
    assert root.name.startswith(base) and other.name.startswith(base)
    assert root != other
    assert json.loads((root / MARKER).read_text())["categories"] == {
        c: sorted(lms) for c, lms in SUBSET.items()
    }


def test_second_call_reuses_the_tree(tmp_path: Path, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger=generate.__name__):
        root = ensure_synthetic_dataset(tmp_path, **TINY)
    assert len(caplog.records) == 1 and "Generated" in caplog.records[0].getMessage()
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete tree")

    monkeypatch.setattr(generate, "generate_synthetic_monuments", fail)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=generate.__name__):
        assert ensure_synthetic_dataset(tmp_path, **TINY) == root
    assert not caplog.records
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary leftovers


@pytest.mark.parametrize("damage", ["no marker", "file deleted without marker", "wrong marker"])
def test_an_incomplete_tree_is_regenerated(tmp_path: Path, damage: str):
    root = ensure_synthetic_dataset(tmp_path, **TINY)
    original = _pngs(root)
    victim = root / "Pyramids" / "Louvre Pyramid" / "3.png"
    if damage == "wrong marker":
        (root / MARKER).write_text(json.dumps({"generator_version": -1}))
    else:
        (root / MARKER).unlink()
    if damage == "file deleted without marker":
        victim.unlink()
    assert ensure_synthetic_dataset(tmp_path, **TINY) == root
    assert _pngs(root) == original
    assert json.loads((root / MARKER).read_text())["seed"] == 0
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_a_tree_finished_first_by_another_process_wins(tmp_path: Path, monkeypatch):
    real = generate.generate_synthetic_monuments
    winner: dict[str, Path] = {}

    def racing(root: Path, **kwargs) -> None:
        monkeypatch.setattr(generate, "generate_synthetic_monuments", real)
        winner["root"] = ensure_synthetic_dataset(tmp_path, **TINY)  # the other process
        winner["marker"] = (winner["root"] / MARKER).stat().st_ino
        real(root, **kwargs)

    monkeypatch.setattr(generate, "generate_synthetic_monuments", racing)
    root = ensure_synthetic_dataset(tmp_path, **TINY)
    assert root == winner["root"]
    assert (root / MARKER).stat().st_ino == winner["marker"]  # the winner's tree was kept
    assert len(_pngs(root)) == 24
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"categories": {"Baroque": ["St. Peter's Basilica"]}},
        {"categories": {"Gothic": ["../escape"]}},
        {"categories": {"Gothic": []}},
        {"image_size": 16},
        {"images_per_landmark": 0},
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict):
    with pytest.raises(ValueError):
        generate_synthetic_monuments(tmp_path, **kwargs)
