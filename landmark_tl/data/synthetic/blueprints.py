"""The synthetic landmarks' fixed traits: the study's table of names, each landmark's
:class:`LandmarkBlueprint` (hand-made for the study's, drawn from a stable hash of the names
for any other), the building materials and the seeding every random draw goes through."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

STUDY_LANDMARKS: dict[str, tuple[str, ...]] = {
    "Gothic": (
        "St. Vitus Cathedral",
        "Milan Cathedral",
        "Chartres Cathedral",
        "Cologne Cathedral",
        "Notre-Dame Cathedral",
    ),
    "Modern": (
        "Chrysler Building",
        "Cathedral of Brasilia",
        "CCTV Headquarters",
        "Hallgrimskirkja",
        "Eiffel Tower",
    ),
    "Mughal": (
        "Taj Mahal",
        "Tomb of Akbar",
        "Jama Masjid",
        "Tomb of Itimad-ud-Daulah",
        "Bibi Ka Maqbara",
    ),
    "Neoclassical": (
        "Buckingham Palace",
        "Concertgebouw",
        "Academy of Athens",
        "Pantheon",
        "Ripon Building",
    ),
    "Pagodas": (
        "Tianning Temple Pagoda",
        "Thien Mu Pagoda",
        "Giant Wild Goose Pagoda",
        "Shwedagon Pagoda",
        "Fogong Temple Pagoda",
    ),
    "Pyramids": (
        "Pyramid of Giza",
        "Pyramid of Djoser",
        "Santa Cecilia Acatitlan Pyramid",
        "El Castillo (Chichen Itza)",
        "Louvre Pyramid",
    ),
}

RGB = tuple[int, int, int]
T = TypeVar("T")

# Building materials shared by every family, so colour alone never names the category.
_MATERIALS: dict[str, RGB] = {
    "grey": (150, 150, 145),
    "stone": (200, 195, 180),
    "sand": (205, 170, 120),
    "redstone": (170, 80, 60),
    "marble": (235, 232, 225),
    "dark": (90, 85, 80),
    "brick": (150, 70, 50),
    "gold": (210, 170, 60),
    "glass": (90, 130, 170),
    "greenglass": (100, 150, 140),
    "copper": (90, 150, 120),
    "terracotta": (190, 100, 60),
    "black": (40, 40, 45),
    "cream": (230, 215, 180),
}
MATERIAL_COLOURS = tuple(_MATERIALS.values())


@dataclass(frozen=True)
class LandmarkBlueprint:
    """The fixed traits of one landmark; each family reads them in its own way."""

    family: str
    aspect: float  # silhouette height / width
    tiers: int  # repeated horizontal units: tiers, steps, setbacks, storeys, pinnacles
    towers: int  # vertical elements: spires, minarets, columns, towers, glass ribs
    crown: float  # size of the crowning element: finial, dome, spire, pediment
    taper: float  # how the form narrows or bulges, in [0, 1]
    ornament: int  # decoration variant, 0..3
    body: RGB
    accent: RGB
    roof: RGB


@dataclass(frozen=True)
class _TraitRanges:
    """Where a family's blueprint traits are drawn from, for landmarks outside the study."""

    aspect: tuple[float, float]
    tiers: tuple[int, int]  # inclusive
    towers: tuple[int, ...]
    crown: tuple[float, float]


_TRAITS: dict[str, _TraitRanges] = {
    "Gothic": _TraitRanges((1.0, 2.0), (0, 6), (1, 2, 3), (0.25, 0.6)),
    "Modern": _TraitRanges((1.3, 2.8), (0, 3), (1, 2, 3), (0.05, 0.3)),
    "Mughal": _TraitRanges((0.6, 1.1), (1, 3), (0, 2, 4), (0.25, 0.45)),
    "Neoclassical": _TraitRanges((0.35, 0.8), (1, 3), (4, 6, 8, 10), (0.1, 0.3)),
    "Pagodas": _TraitRanges((1.3, 2.8), (3, 11), (0, 1), (0.08, 0.3)),
    "Pyramids": _TraitRanges((0.4, 0.9), (1, 8), (0, 3, 5), (0.0, 0.3)),
}


# --- seeding -----------------------------------------------------------------------------


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable (unsalted) hash of ``parts``."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One of ``options``, drawn from ``rng``."""
    return options[int(rng.integers(len(options)))]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _blueprint(family: str, traits: str, colours: str) -> LandmarkBlueprint:
    """A blueprint from ``"aspect tiers towers crown taper ornament"`` and three material names."""
    aspect, tiers, towers, crown, taper, ornament = traits.split()
    body, accent, roof = (_MATERIALS[name] for name in colours.split())
    return LandmarkBlueprint(
        family,
        float(aspect),
        int(tiers),
        int(towers),
        float(crown),
        float(taper),
        int(ornament),
        body,
        accent,
        roof,
    )


# Hand-made blueprints of the study's landmarks, loosely after the real monuments; each
# family reads the traits in its own way (see the drawing functions).
_STUDY_BLUEPRINTS: dict[tuple[str, str], LandmarkBlueprint] = {
    (family, name): _blueprint(family, traits, colours)
    for family, name, traits, colours in (
        ("Gothic", "St. Vitus Cathedral", "1.6 4 3 0.45 0.4 2", "dark stone copper"),
        ("Gothic", "Milan Cathedral", "1.2 6 1 0.5 0.2 3", "marble cream stone"),
        ("Gothic", "Chartres Cathedral", "1.7 0 2 0.45 0.6 1", "grey dark copper"),
        ("Gothic", "Cologne Cathedral", "2.0 5 2 0.35 0.45 2", "dark grey black"),
        ("Gothic", "Notre-Dame Cathedral", "1.1 2 2 0.25 0.8 1", "cream dark grey"),
        ("Modern", "Chrysler Building", "2.8 3 1 0.25 0.4 2", "grey black stone"),
        ("Modern", "Cathedral of Brasilia", "1.3 0 3 0.3 0.2 2", "marble glass glass"),
        ("Modern", "CCTV Headquarters", "1.6 0 2 0.15 0.1 3", "dark grey black"),
        ("Modern", "Hallgrimskirkja", "1.8 2 3 0.2 0.3 2", "stone dark grey"),
        ("Modern", "Eiffel Tower", "2.6 2 1 0.2 0.7 1", "terracotta dark brick"),
        ("Mughal", "Taj Mahal", "0.9 3 4 0.45 0.9 3", "marble grey marble"),
        ("Mughal", "Tomb of Akbar", "0.65 2 4 0.25 0.3 1", "redstone marble marble"),
        ("Mughal", "Jama Masjid", "0.75 3 2 0.35 0.8 2", "redstone marble marble"),
        ("Mughal", "Tomb of Itimad-ud-Daulah", "0.7 1 4 0.25 0.2 0", "marble gold cream"),
        ("Mughal", "Bibi Ka Maqbara", "1.05 3 4 0.4 0.7 1", "cream grey marble"),
        ("Neoclassical", "Buckingham Palace", "0.4 3 6 0.2 0.4 3", "stone cream grey"),
        ("Neoclassical", "Concertgebouw", "0.6 2 4 0.25 0.3 0", "brick cream grey"),
        ("Neoclassical", "Academy of Athens", "0.55 1 6 0.2 0.5 0", "marble cream terracotta"),
        ("Neoclassical", "Pantheon", "0.7 1 8 0.3 0.95 2", "grey stone dark"),
        ("Neoclassical", "Ripon Building", "0.5 3 10 0.2 0.8 1", "cream brick brick"),
        ("Pagodas", "Tianning Temple Pagoda", "2.6 11 1 0.12 0.3 1", "grey gold dark"),
        ("Pagodas", "Thien Mu Pagoda", "2.2 7 0 0.15 0.4 0", "stone brick terracotta"),
        ("Pagodas", "Giant Wild Goose Pagoda", "1.8 7 0 0.08 0.7 1", "sand dark sand"),
        ("Pagodas", "Shwedagon Pagoda", "1.5 3 0 0.3 0.9 2", "gold marble gold"),
        ("Pagodas", "Fogong Temple Pagoda", "1.9 5 1 0.2 0.2 0", "brick grey dark"),
        ("Pyramids", "Pyramid of Giza", "0.62 1 0 0.0 0.5 0", "sand stone sand"),
        ("Pyramids", "Pyramid of Djoser", "0.5 6 0 0.3 0.6 0", "stone dark sand"),
        ("Pyramids", "Santa Cecilia Acatitlan Pyramid", "0.7 3 0 0.35 0.5 3", "grey stone grey"),
        ("Pyramids", "El Castillo (Chichen Itza)", "0.55 9 0 0.25 0.3 3", "grey stone grey"),
        ("Pyramids", "Louvre Pyramid", "0.65 1 5 0.0 0.5 0", "glass grey glass"),
    )
}


def landmark_blueprint(category: str, landmark: str) -> LandmarkBlueprint:
    """The blueprint of a landmark, the same for every seed: hand-made for the study's
    landmarks, drawn from a stable hash of the names for any other."""
    if (category, landmark) in _STUDY_BLUEPRINTS:
        return _STUDY_BLUEPRINTS[category, landmark]
    ranges = _TRAITS[category]
    rng = seeded_rng("blueprint", category, landmark)
    picks = rng.choice(len(MATERIAL_COLOURS), 3, replace=False)
    body, accent, roof = (MATERIAL_COLOURS[i] for i in picks)
    return LandmarkBlueprint(
        family=category,
        aspect=_uniform(rng, ranges.aspect),
        tiers=int(rng.integers(ranges.tiers[0], ranges.tiers[1] + 1)),
        towers=int(pick(rng, ranges.towers)),
        crown=_uniform(rng, ranges.crown),
        taper=float(rng.uniform()),
        ornament=int(rng.integers(4)),
        body=body,
        accent=accent,
        roof=roof,
    )


# --- colours -----------------------------------------------------------------------------


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour a fraction ``t`` of the way from ``a`` to ``b``."""
    r, g, b_ = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return r, g, b_
