"""The synthetic tree ``<root>/<category>/<landmark>/<n>.png``: written image by image from
the seeds alone, and generated once into a cache folder named by everything that determines
its bytes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from landmark_tl.core.io import atomic_write_json, current_umask
from landmark_tl.data.synthetic.blueprints import STUDY_LANDMARKS, landmark_blueprint, seeded_rng
from landmark_tl.data.synthetic.drawing import FAMILIES
from landmark_tl.data.synthetic.render import render_monument

log = logging.getLogger(__name__)

# Bump whenever the images change (blueprints, drawing or rendering): it names the cache
# folder, so stale trees are never reused.
GENERATOR_VERSION = 2

MARKER = ".complete"
_MIN_IMAGE_SIZE = 32
_RENAME_ATTEMPTS = 3


def _normalise(categories: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Validate a category -> landmarks map; ``None`` means the study's full table."""
    if categories is None:
        return dict(STUDY_LANDMARKS)
    unknown = set(categories) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {sorted(FAMILIES)}")
    out = {}
    for category, landmarks in categories.items():
        names = tuple(landmarks)
        bad = [n for n in names if not n or n in (".", "..") or "/" in n or "\0" in n]
        if not names or bad or len(set(names)) != len(names):
            raise ValueError(f"{category}: landmark names must be unique file names, got {names}")
        out[category] = names
    return out


def _canonical(categories: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The category -> landmarks map in sorted, JSON-ready form (order does not matter)."""
    return {category: sorted(landmarks) for category, landmarks in sorted(categories.items())}


def _parameters(
    images_per_landmark: int, image_size: int, seed: int, categories: dict[str, tuple[str, ...]]
) -> dict:
    """Everything that determines the tree's bytes; written into its completion marker."""
    return {
        "generator_version": GENERATOR_VERSION,
        "images_per_landmark": images_per_landmark,
        "image_size": image_size,
        "seed": seed,
        "categories": _canonical(categories),
    }


def _folder_name(params: dict) -> str:
    """The cache folder of a tree; a subset of the study's table adds a digest of it."""
    name = (
        f"synthetic-monuments-v{GENERATOR_VERSION}-n{params['images_per_landmark']}"
        f"-s{params['image_size']}-seed{params['seed']}"
    )
    if params["categories"] == _canonical(STUDY_LANDMARKS):
        return name
    digest = hashlib.sha256(json.dumps(params["categories"]).encode("utf-8")).hexdigest()
    return f"{name}-subset{digest[:10]}"


def _write_image(
    root: Path, category: str, landmark: str, index: int, size: int, seed: int
) -> None:
    """Render and save image ``index`` of a landmark; its randomness depends on nothing else."""
    rng = seeded_rng("image", seed, category, landmark, index)
    image = render_monument(landmark_blueprint(category, landmark), rng, size)
    image.save(root / category / landmark / f"{index}.png", format="PNG", optimize=False)


def generate_synthetic_monuments(
    root: str | Path,
    *,
    images_per_landmark: int = 14,
    image_size: int = 224,
    seed: int = 0,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Write ``<root>/<category>/<landmark>/<n>.png``; the same arguments give the same bytes."""
    if images_per_landmark < 1 or image_size < _MIN_IMAGE_SIZE:
        raise ValueError(
            f"need images_per_landmark >= 1 and image_size >= {_MIN_IMAGE_SIZE}, "
            f"got {images_per_landmark} and {image_size}"
        )
    root = Path(root)
    jobs = []
    for category, landmarks in _normalise(categories).items():
        for landmark in landmarks:
            (root / category / landmark).mkdir(parents=True, exist_ok=True)
            jobs += [(category, landmark, i) for i in range(images_per_landmark)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _write_image(root, *job, image_size, seed), jobs))


def _is_complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a finished tree generated with ``params``."""
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False


def ensure_synthetic_dataset(
    cache_dir: str | Path,
    *,
    images_per_landmark: int = 14,
    image_size: int = 224,
    seed: int = 0,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """The root of a complete synthetic tree under ``cache_dir``, generated on first use.

    The tree is generated into a temporary sibling, marked complete, then renamed into
    place, so readers never see a partial tree; a tree without a valid marker is replaced.
    """
    params = _parameters(images_per_landmark, image_size, seed, _normalise(categories))
    cache_dir = Path(cache_dir)
    root = cache_dir / _folder_name(params)
    if _is_complete(root, params):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{root.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700, made what mkdir() gives
        generate_synthetic_monuments(
            tmp,
            images_per_landmark=images_per_landmark,
            image_size=image_size,
            seed=seed,
            categories=categories,
        )
        atomic_write_json(tmp / MARKER, params)
        _move_into_place(tmp, root, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Generated synthetic monuments into %s in %.1f s", root, time.perf_counter() - start)
    return root


def _move_into_place(tmp: Path, root: Path, params: dict) -> None:
    """Rename ``tmp`` to ``root``, moving an incomplete ``root`` aside first; a complete
    ``root`` that another process renamed into place first wins."""
    for _ in range(_RENAME_ATTEMPTS):
        try:
            os.replace(tmp, root)
            return
        except OSError:
            if _is_complete(root, params):
                return
            _discard(root)
    os.replace(tmp, root)


def _discard(path: Path) -> None:
    """Atomically move ``path`` out of the way, then delete it."""
    trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".stale"))
    try:
        os.replace(path, trash / path.name)
    except FileNotFoundError:
        pass
    finally:
        shutil.rmtree(trash, ignore_errors=True)
