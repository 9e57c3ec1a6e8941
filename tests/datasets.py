"""Generators of small data sets in the layouts the data sources read (manifest, GLDv2)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from landmark_tl.data.sources.gldv2 import image_key


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    """A CSV file; ``bom`` adds a UTF-8 byte-order mark and CRLF line ends (as Excel writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n" if bom else "\n").writerows([header, *rows])
    return path


def folder_manifest(tree: Path, path: Path, *, category: bool = True) -> Path:
    """A manifest listing every image of a ``<category>/<landmark>/<image>`` tree."""
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    rows = []
    for file in files:
        key = file.relative_to(tree).as_posix()
        cat, landmark, _ = key.split("/")
        rows.append([key, landmark, cat] if category else [key, landmark])
    header = ["path", "landmark", "category"] if category else ["path", "landmark"]
    return write_csv(path, header, rows)


def jpeg(path: Path, seed: int, size: int = 32) -> Path:
    """A small JPEG of noise, unique per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


# A long tail: landmark id → images; supercategory of each (None: no hierarchy row).
GLDV2_LANDMARKS = {"101": 12, "102": 9, "103": 7, "104": 6, "105": 3, "106": 1, "107": 4}
GLDV2_SUPER = {
    "101": "church",
    "102": "church",
    "103": "castle",
    "104": "castle",
    "105": "bridge",
    "106": "bridge",
    "107": None,
}
GLDV2_NATURAL = {"101": "human-made", "102": "human-made", "103": "human-made"}


def make_gldv2(root: Path, *, missing: int = 1, unclean: int = 1) -> dict[str, list[str]]:
    """A tiny GLDv2 download: train.csv, hierarchy CSV, train_clean.csv and train/a/b/c/.

    The first ``missing`` ids of landmark 101 are listed but not downloaded; the last
    ``unclean`` ids of landmark 102 are left out of train_clean.csv. Returns the ids per
    landmark.
    """
    ids: dict[str, list[str]] = {}
    rows = []
    for n, (landmark, count) in enumerate(GLDV2_LANDMARKS.items()):
        ids[landmark] = [f"{(n * 97 + i * 13) % 256:02x}{n:x}{i:02x}c0ffee" for i in range(count)]
        for i, image_id in enumerate(ids[landmark]):
            rows.append([image_id, f"http://example.org/{image_id}.jpg", landmark])
            if not (landmark == "101" and i < missing):
                jpeg(root / image_key(image_id), seed=n * 100 + i)
    write_csv(root / "train.csv", ["id", "url", "landmark_id"], rows)
    clean = [
        [landmark, " ".join(ids[landmark][: -unclean if landmark == "102" and unclean else None])]
        for landmark in ids
    ]
    write_csv(root / "train_clean.csv", ["landmark_id", "images"], clean)
    hierarchy = [
        [landmark, f"http://commons.wikimedia.org/wiki/Category:L{landmark}", sup, "", natural]
        for landmark, sup in GLDV2_SUPER.items()
        if sup is not None
        for natural in [GLDV2_NATURAL.get(landmark, "natural")]
    ]
    write_csv(
        root / "train_label_to_hierarchical.csv",
        ["landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"],
        hierarchy,
    )
    return ids
