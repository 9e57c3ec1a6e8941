"""Synthetic monuments: a seeded, cached, two-level image data set (category / landmark).

Each category is an architectural family drawn by its form; each landmark is a fixed
:class:`LandmarkBlueprint` of finer traits (proportions, tier count, ornaments, colours)
that every one of its images draws. Every image varies a :class:`Scene` of nuisances
(viewpoint, framing, sky, ground, light, clutter, noise), so no single pixel statistic
gives the label. The tree is an ordinary image folder: ``<root>/<category>/<landmark>/<n>.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from landmark_tl.core.io import atomic_write_json, current_umask

log = logging.getLogger(__name__)

# Bump whenever the images change: it names the cache folder, so stale trees are never reused.
GENERATOR_VERSION = 2

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

MARKER = ".complete"
_SUPERSAMPLE = 2
_MIN_IMAGE_SIZE = 32
_RENAME_ATTEMPTS = 3

RGB = tuple[int, int, int]
Point = tuple[float, float]
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
_SKIES: tuple[tuple[RGB, RGB], ...] = (
    ((60, 110, 190), (170, 205, 235)),  # clear
    ((120, 160, 210), (215, 225, 235)),  # hazy
    ((130, 135, 145), (190, 190, 195)),  # overcast
    ((70, 70, 130), (240, 160, 100)),  # sunset
    ((35, 40, 80), (150, 110, 140)),  # dusk
)
_GROUNDS: tuple[RGB, ...] = (
    (80, 130, 60),  # grass
    (200, 180, 130),  # sand
    (130, 130, 125),  # pavement
    (120, 95, 70),  # dirt
    (80, 110, 130),  # water
)
_MATERIAL_COLOURS = tuple(_MATERIALS.values())
_FOLIAGE: tuple[RGB, ...] = ((40, 90, 40), (70, 110, 50), (30, 70, 50), (110, 120, 50))


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
class Scene:
    """Nuisance parameters of one image; none of them depends on the label."""

    horizon: float  # fraction of the height
    sky: tuple[RGB, RGB]
    ground: tuple[RGB, RGB]  # far, near
    clouds: int
    scale: float  # larger side of the monument, fraction of the frame
    centre_x: float
    base_y: float
    squash: float
    shear: float
    roll: float  # radians
    perspective: Point
    colour_shift: tuple[float, float, float]
    shade: float  # signed side-light strength
    haze: float
    trees: int
    people: int
    poles: int
    birds: int
    occluder: str | None
    brightness: float
    contrast: float
    tint: tuple[float, float, float]
    blur: float
    noise: float


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


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable (unsalted) hash of ``parts``."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
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
    rng = _rng("blueprint", category, landmark)
    picks = rng.choice(len(_MATERIAL_COLOURS), 3, replace=False)
    body, accent, roof = (_MATERIAL_COLOURS[i] for i in picks)
    return LandmarkBlueprint(
        family=category,
        aspect=_uniform(rng, ranges.aspect),
        tiers=int(rng.integers(ranges.tiers[0], ranges.tiers[1] + 1)),
        towers=int(_pick(rng, ranges.towers)),
        crown=_uniform(rng, ranges.crown),
        taper=float(rng.uniform()),
        ornament=int(rng.integers(4)),
        body=body,
        accent=accent,
        roof=roof,
    )


# --- drawing in monument coordinates ---------------------------------------------------


@dataclass(frozen=True)
class _Pen:
    """Draws in monument coordinates (x in [-0.5, 0.5], y up from 0) through a homography."""

    draw: ImageDraw.ImageDraw
    matrix: np.ndarray  # 3x3: monument coordinates -> pixels
    unit: float  # pixels per monument unit, for line widths

    def map(self, points: Sequence[Point]) -> list[Point]:
        pts = np.asarray(points, dtype=np.float64)
        out = np.c_[pts, np.ones(len(pts))] @ self.matrix.T
        return [tuple(p) for p in out[:, :2] / out[:, 2:]]

    def poly(self, points: Sequence[Point], fill: RGB) -> None:
        self.draw.polygon(self.map(points), fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        self.poly(np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)], fill)

    def line(self, points: Sequence[Point], fill: RGB, width: float) -> None:
        self.draw.line(self.map(points), fill=fill, width=max(1, round(width * self.unit)))

    def mirrored(self, half: Sequence[Point], fill: RGB, cx: float = 0.0) -> None:
        """A polygon symmetric about x = cx from its right half, listed bottom to top."""
        right = [(cx + x, y) for x, y in half]
        left = [(cx - x, y) for x, y in reversed(half)]
        self.poly(right + left, fill)


def _arch(pen: _Pen, cx: float, y0: float, w: float, h: float, fill: RGB) -> None:
    """A pointed (lancet) arch opening."""
    pen.poly(
        [
            (cx - w / 2, y0),
            (cx + w / 2, y0),
            (cx + w / 2, y0 + 0.7 * h),
            (cx, y0 + h),
            (cx - w / 2, y0 + 0.7 * h),
        ],
        fill,
    )


def _onion_dome(pen: _Pen, cx: float, y0: float, r: float, bulge: float, fill: RGB) -> None:
    """A bulbous dome with a finial, base radius ``r`` at height ``y0``."""
    b = 1.0 + 0.35 * bulge
    half = [
        (r, 0),
        (r * b, 0.35 * r),
        (r * b * 0.9, 0.8 * r),
        (r * 0.55, 1.25 * r),
        (r * 0.15, 1.55 * r),
        (0, 1.75 * r),
    ]
    pen.mirrored([(x, y0 + y) for x, y in half], fill, cx)
    pen.line([(cx, y0 + 1.7 * r), (cx, y0 + 2.05 * r)], fill, 0.012)


def _windows(
    pen: _Pen, x0: float, x1: float, y0: float, y1: float, cols: int, rows: int, fill: RGB
) -> None:
    """A regular grid of window rectangles inside a box."""
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    for i in range(cols):
        for j in range(rows):
            wx, wy = x0 + (i + 0.3) * dx, y0 + (j + 0.25) * dy
            pen.rect(wx, wy, wx + 0.4 * dx, wy + 0.5 * dy, fill)


def _draw_pagoda(pen: _Pen, bp: LandmarkBlueprint) -> None:
    """Stacked tiers with up-turned eaves, narrowing upwards, under a finial or a stupa bell.

    tiers: storeys; towers: eave spread; crown: finial height; taper: narrowing;
    ornament: windows (1, 3), a stupa bell instead of a ringed finial (2, 3).
    """
    h, base = bp.aspect, 0.05 * bp.aspect
    finial = bp.crown * h
    tier_h = (h - finial - base) / bp.tiers
    pen.rect(-0.5, 0, 0.5, base, bp.accent)
    shrink = 0.25 + 0.45 * bp.taper
    for i in range(bp.tiers):
        w = 0.62 * (1 - shrink * i / max(1, bp.tiers - 1))
        y = base + i * tier_h
        pen.rect(-w / 2, y, w / 2, y + 0.62 * tier_h, bp.body)
        if bp.ornament in (1, 3):
            _windows(pen, -w / 2, w / 2, y, y + 0.62 * tier_h, 3, 1, bp.accent)
        eave, top = w / 2 + 0.14 + 0.06 * bp.towers, y + tier_h
        pen.poly(
            [
                (-eave, y + 0.75 * tier_h),
                (-eave - 0.03, y + 0.95 * tier_h),
                (-w / 2, y + 0.62 * tier_h),
                (w / 2, y + 0.62 * tier_h),
                (eave + 0.03, y + 0.95 * tier_h),
                (eave, y + 0.75 * tier_h),
                (w / 3, top),
                (-w / 3, top),
            ],
            bp.roof,
        )
    y = base + bp.tiers * tier_h
    if bp.ornament >= 2:
        half = [(0.16, 0), (0.14, 0.3 * finial), (0.05, 0.7 * finial), (0.0, finial)]
        pen.mirrored([(x, y + dy) for x, dy in half], bp.roof)
    else:
        pen.line([(0, y), (0, y + finial)], bp.accent, 0.025)
        for k in range(1, 4):
            pen.ellipse(0, y + 0.2 * k * finial, 0.05, 0.015, bp.accent)


def _draw_pyramid(pen: _Pen, bp: LandmarkBlueprint) -> None:
    """A smooth or stepped pyramid with an optional top temple, stairway and glass grid.

    tiers: steps (1 is smooth); towers: glass grid lines; crown: width of the flat top;
    taper: step inset; ornament: a top temple (1, 3), a central stairway (2, 3).
    """
    h = bp.aspect
    top_w = bp.crown * 0.6
    top_h = h * (0.8 if bp.ornament % 2 else 1.0)
    if bp.tiers <= 1:
        pen.poly([(-0.5, 0), (0.5, 0), (top_w / 2, top_h), (-top_w / 2, top_h)], bp.body)
    else:
        step_h = top_h / bp.tiers
        inset = 0.25 + 0.6 * bp.taper
        for i in range(bp.tiers):
            w0 = 1 - (1 - top_w) * i / bp.tiers
            w1 = w0 - (1 - top_w) / bp.tiers * inset
            shade = bp.body if i % 2 == 0 else _mix(bp.body, (0, 0, 0), 0.15)
            y = i * step_h
            pen.poly(
                [(-w0 / 2, y), (w0 / 2, y), (w1 / 2, y + step_h), (-w1 / 2, y + step_h)], shade
            )
    for k in range(1, bp.towers + 1):  # glass grid: lines up the faces
        f = k / (bp.towers + 1)
        pen.line([(-0.5 + f, 0), (-top_w / 2 + f * top_w, top_h)], bp.accent, 0.006)
        pen.line(
            [
                (-0.5 * (1 - f) - top_w / 2 * f, f * top_h),
                (0.5 * (1 - f) + top_w / 2 * f, f * top_h),
            ],
            bp.accent,
            0.006,
        )
    if bp.ornament >= 2:
        pen.poly([(-0.07, 0), (0.07, 0), (0.04, top_h), (-0.04, top_h)], bp.accent)
    if bp.ornament % 2:
        tw = max(top_w, 0.12)
        pen.rect(-tw / 2, top_h, tw / 2, h, bp.roof)
        pen.rect(-tw / 8, top_h, tw / 8, top_h + 0.6 * (h - top_h), bp.accent)


def _draw_gothic(pen: _Pen, bp: LandmarkBlueprint) -> None:
    """A pointed-arch facade under one, two or three spired towers, with pinnacles.

    tiers: pinnacles; towers: towers; crown: spire height; taper: tower width;
    ornament: a rose window (1, 2), lancet windows (2), three portals (3).
    """
    h = bp.aspect
    nave_h = 0.42 * h
    tower_w = 0.16 + 0.1 * bp.taper
    pen.rect(-0.4, 0, 0.4, nave_h, bp.body)
    pen.poly([(-0.4, nave_h), (0.4, nave_h), (0, nave_h + 0.18)], bp.roof)
    xs = {1: [0.0], 2: [-0.3, 0.3], 3: [-0.3, 0.0, 0.3]}[bp.towers]
    for x in xs:
        lower = 0.85 if bp.towers == 3 and x != 0 else 1.0  # side towers of three
        top = h * (1 - bp.crown) * lower
        pen.rect(x - tower_w / 2, 0, x + tower_w / 2, top, bp.body)
        pen.poly([(x - tower_w / 2, top), (x + tower_w / 2, top), (x, h * lower)], bp.roof)
        for k in range(2):
            _arch(pen, x, top * (0.5 + 0.22 * k), tower_w * 0.35, top * 0.15, bp.accent)
    for k in range(bp.tiers):  # pinnacles along the nave
        x = -0.45 + 0.9 * (k + 0.5) / bp.tiers
        pen.poly([(x - 0.02, nave_h), (x + 0.02, nave_h), (x, nave_h + 0.15)], bp.roof)
    if bp.ornament in (1, 2):
        pen.ellipse(0, 0.65 * nave_h, 0.11, 0.11, bp.accent)
        pen.ellipse(0, 0.65 * nave_h, 0.05, 0.05, bp.roof)
    portals = [-0.2, 0.0, 0.2] if bp.ornament == 3 else [0.0]
    for x in portals:
        _arch(pen, x, 0, 0.1, 0.3 * nave_h, _mix(bp.accent, (0, 0, 0), 0.4))
    if bp.ornament == 2:
        for x in (-0.2, 0.2):
            _arch(pen, x, 0.35 * nave_h, 0.05, 0.4 * nave_h, bp.accent)


def _draw_mughal(pen: _Pen, bp: LandmarkBlueprint) -> None:
    """A plinth, an iwan block and an onion dome, flanked by minarets and chhatris.

    tiers: minaret balconies; towers: minarets; crown: dome size; taper: dome bulge
    and minaret height; ornament: chhatris (1, 3), side domes (2, 3).
    """
    h = bp.aspect
    plinth, block_top = 0.07 * h, 0.5 * h
    pen.rect(-0.5, 0, 0.5, plinth, bp.accent)
    pen.rect(-0.3, plinth, 0.3, block_top, bp.body)
    _arch(pen, 0, plinth + 0.05, 0.2, 0.7 * (block_top - plinth), bp.accent)
    r = min(bp.crown * 0.6, (h - block_top) / 2.3)
    pen.rect(-0.8 * r, block_top, 0.8 * r, block_top + 0.15 * r, bp.body)  # drum
    _onion_dome(pen, 0, block_top + 0.15 * r, r, bp.taper, bp.roof)
    minaret_top = plinth + (block_top - plinth) * (1.1 + 0.3 * bp.taper)
    xs = {0: [], 2: [-0.44, 0.44], 4: [-0.44, -0.36, 0.36, 0.44]}[bp.towers]
    for x in xs:
        pen.rect(x - 0.025, plinth, x + 0.025, minaret_top, bp.body)
        for k in range(1, bp.tiers + 1):
            y = plinth + (minaret_top - plinth) * k / (bp.tiers + 1)
            pen.rect(x - 0.04, y, x + 0.04, y + 0.015, bp.accent)
        _onion_dome(pen, x, minaret_top, 0.04, bp.taper, bp.roof)
    if bp.ornament in (1, 3):
        for x in (-0.25, 0.25):
            pen.rect(x - 0.03, block_top, x + 0.03, block_top + 0.05, bp.accent)
            _onion_dome(pen, x, block_top + 0.05, 0.045, bp.taper, bp.roof)
    if bp.ornament >= 2:
        for x in (-0.17, 0.17):
            _onion_dome(pen, x, block_top, 0.08, bp.taper, bp.roof)


def _draw_neoclassical(pen: _Pen, bp: LandmarkBlueprint) -> None:
    """Wings of windows around a columned portico under a pediment or a dome.

    tiers: storeys of windows; towers: columns; crown: pediment height; taper: portico
    width; ornament: a pediment (0, 2), a dome (1, 2), a balustrade with statues (3).
    """
    h = bp.aspect
    steps, top = 0.06 * h, (1 - bp.crown) * h
    cornice = top - 0.06 * h
    portico = 0.3 + 0.35 * bp.taper
    for k in range(3):
        inset = 0.03 * (3 - k)
        pen.rect(
            -portico / 2 - inset, k * steps / 3, portico / 2 + inset, (k + 1) * steps / 3, bp.accent
        )
    pen.rect(-0.5, steps, 0.5, cornice, bp.body)
    for side in (-1, 1):
        x0, x1 = sorted((side * (portico / 2 + 0.02), side * 0.48))
        _windows(pen, x0, x1, steps, cornice, 3, bp.tiers, _mix(bp.body, (0, 0, 0), 0.45))
    col_w = portico / (2 * bp.towers)
    for k in range(bp.towers):
        x = -portico / 2 + (k + 0.5) * portico / bp.towers
        pen.rect(x - col_w / 2, steps, x + col_w / 2, cornice, bp.accent)
    if bp.ornament in (1, 2):
        r = 0.4 * portico
        pen.mirrored(
            [(r, top), (0.9 * r, top + 0.45 * r), (0.6 * r, top + 0.8 * r), (0, top + r)], bp.roof
        )
        pen.rect(-0.1 * r, top + r, 0.1 * r, top + 1.25 * r, bp.roof)
    pen.rect(-portico / 2 - 0.02, cornice, portico / 2 + 0.02, top, bp.body)
    if bp.ornament in (0, 2):
        pen.poly([(-portico / 2 - 0.03, top), (portico / 2 + 0.03, top), (0, h)], bp.roof)
    if bp.ornament == 3:
        pen.rect(-0.5, cornice, 0.5, top, _mix(bp.body, (255, 255, 255), 0.3))
        for k in range(6):
            x = -0.45 + 0.18 * k
            pen.rect(x - 0.01, top, x + 0.01, top + 0.6 * (h - top), bp.accent)


def _draw_modern(pen: _Pen, bp: LandmarkBlueprint) -> None:
    """One to three glass towers with setbacks, mullion grids and a crown.

    tiers: setbacks; towers: towers; crown: crown height; taper: narrowing per setback;
    ornament: a flat top (0), an antenna (1), a pointed (2) or a slanted (3) crown.
    """
    h = bp.aspect
    xs = {
        1: [(0.0, 0.7)],
        2: [(-0.22, 0.42), (0.22, 0.42)],
        3: [(-0.33, 0.3), (0.0, 0.34), (0.33, 0.3)],
    }[bp.towers]
    for i, (cx, w0) in enumerate(xs):
        top = h * (1 - bp.crown) * (1.0 if i == len(xs) // 2 else 0.75)
        seg = top / (bp.tiers + 1)
        for k in range(bp.tiers + 1):
            y0, y1 = k * seg, (k + 1) * seg
            w = w0 * (1 - 0.35 * bp.taper) ** k
            pen.rect(cx - w / 2, y0, cx + w / 2, y1, bp.body)
            rows = max(2, round(12 * seg / h))
            for j in range(1, rows):
                y = y0 + (y1 - y0) * j / rows
                pen.line([(cx - w / 2, y), (cx + w / 2, y)], bp.accent, 0.006)
            for j in range(1, 4):
                x = cx - w / 2 + w * j / 4
                pen.line([(x, y0), (x, y1)], bp.accent, 0.006)
        _modern_crown(pen, bp, cx, top, w, h * bp.crown)


def _modern_crown(
    pen: _Pen, bp: LandmarkBlueprint, cx: float, y: float, w: float, size: float
) -> None:
    """The top of a modern tower: flat, an antenna, a pointed crown or a slanted roof."""
    if bp.ornament == 1:
        pen.line([(cx, y), (cx, y + size)], bp.accent, 0.015)
    elif bp.ornament == 2:
        pen.poly([(cx - w / 2, y), (cx + w / 2, y), (cx, y + size)], bp.roof)
    elif bp.ornament == 3:
        pen.poly([(cx - w / 2, y), (cx + w / 2, y), (cx + w / 2, y + size * 0.6)], bp.roof)
    else:
        pen.rect(cx - w / 2, y, cx + w / 2, y + 0.03, bp.roof)


_DRAWERS: dict[str, Callable[[_Pen, LandmarkBlueprint], None]] = {
    "Gothic": _draw_gothic,
    "Modern": _draw_modern,
    "Mughal": _draw_mughal,
    "Neoclassical": _draw_neoclassical,
    "Pagodas": _draw_pagoda,
    "Pyramids": _draw_pyramid,
}


# --- scenes --------------------------------------------------------------------------------


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour a fraction ``t`` of the way from ``a`` to ``b``."""
    r, g, b_ = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return r, g, b_


def _shift(colour: RGB, shift: Sequence[float]) -> RGB:
    """``colour`` plus a per-channel ``shift``, clipped to the valid range."""
    r, g, b = (int(np.clip(c + s, 0, 255)) for c, s in zip(colour, shift, strict=True))
    return r, g, b


def _random_scene(rng: np.random.Generator) -> Scene:
    """Draw the nuisances of one image."""
    sky = _pick(rng, _SKIES)
    far = _pick(rng, _GROUNDS)
    horizon = float(rng.uniform(0.55, 0.8))
    return Scene(
        horizon=horizon,
        sky=(_shift(sky[0], rng.normal(0, 12, 3)), _shift(sky[1], rng.normal(0, 12, 3))),
        ground=(far, _mix(far, _pick(rng, _GROUNDS), float(rng.uniform(0, 0.6)))),
        clouds=int(rng.integers(0, 7)),
        scale=float(rng.uniform(0.55, 0.95)),
        centre_x=float(rng.uniform(0.3, 0.7)),
        base_y=float(rng.uniform(horizon, 0.97)),
        squash=float(rng.uniform(0.75, 1.1)),
        shear=float(rng.uniform(-0.15, 0.15)),
        roll=float(rng.uniform(-0.06, 0.06)),
        perspective=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.12, 0.12))),
        colour_shift=(*rng.normal(0, 12, 3).tolist(),),
        shade=float(rng.uniform(-0.35, 0.35)),
        haze=float(rng.uniform(0, 0.3)),
        trees=int(rng.integers(0, 5)),
        people=int(rng.integers(0, 9)),
        poles=int(rng.integers(0, 4)),
        birds=int(rng.integers(0, 6)),
        occluder=_pick(rng, (None, None, None, None, *_OCCLUDERS)),
        brightness=float(rng.uniform(0.7, 1.25)),
        contrast=float(rng.uniform(0.7, 1.25)),
        tint=(*rng.uniform(0.85, 1.15, 3).tolist(),),
        blur=float(rng.uniform(0, 1.0)) if rng.uniform() < 0.4 else 0.0,
        noise=float(rng.uniform(2, 10)),
    )


def _gradient(start: RGB, end: RGB, t: np.ndarray) -> np.ndarray:
    """Colours from ``start`` (t = 0) to ``end`` (t = 1), shape ``t.shape[:-1] + (3,)``."""
    return np.asarray(start, np.float32) + (np.asarray(end, np.float32) - start) * t


def _backdrop(scene: Scene, rng: np.random.Generator, size: int) -> Image.Image:
    """Sky gradient with clouds above the horizon, ground gradient below."""
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    hz = scene.horizon
    sky = _gradient(*scene.sky, np.clip(y / hz, 0, 1))
    ground = _gradient(*scene.ground, np.clip((y - hz) / (1 - hz), 0, 1))
    column = np.where(y < hz, sky, ground)
    image = Image.fromarray(np.broadcast_to(column, (size, size, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(scene.clouds):
        cx, cy = rng.uniform(-0.1, 1.1) * size, rng.uniform(0.05, hz * 0.8) * size
        alpha = int(rng.integers(60, 200))
        for _ in range(int(rng.integers(3, 7))):
            rx, ry = rng.uniform(0.04, 0.12) * size, rng.uniform(0.02, 0.05) * size
            ox, oy = rng.normal(0, 0.06) * size, rng.normal(0, 0.015) * size
            draw.ellipse(
                [cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry],
                fill=(245, 245, 250, alpha),
            )
    return image.filter(ImageFilter.BoxBlur(size * 0.006)) if scene.clouds else image


def _view_matrix(scene: Scene, aspect: float, size: int) -> tuple[np.ndarray, float]:
    """Homography from monument coordinates to pixels, and the pixels per unit."""
    cos, sin = math.cos(scene.roll), math.sin(scene.roll)
    px, py = scene.perspective
    affine = np.array([[scene.squash * cos, scene.shear - sin, 0], [sin, cos, 0], [0, 0, 1]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [px, py / aspect, 1 - py / 2]])
    view = persp @ affine
    corners = np.array([[-0.5, 0, 1], [0.5, 0, 1], [0.5, aspect, 1], [-0.5, aspect, 1]])
    mapped = corners @ view.T
    xy = mapped[:, :2] / mapped[:, 2:]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    unit = scene.scale * size / max(hi - lo)
    to_pixels = np.array(
        [
            [unit, 0, scene.centre_x * size - unit * (lo[0] + hi[0]) / 2],
            [0, -unit, scene.base_y * size + unit * lo[1]],
            [0, 0, 1],
        ]
    )
    return to_pixels @ view, unit


def _monument_layer(bp: LandmarkBlueprint, scene: Scene, size: int) -> Image.Image:
    """The monument alone on a transparent layer, coloured, side-lit and hazed."""
    look = replace(
        bp,
        body=_shift(bp.body, scene.colour_shift),
        accent=_shift(bp.accent, scene.colour_shift),
        roof=_shift(bp.roof, scene.colour_shift),
    )
    layer = Image.new("RGBA", (size, size))
    matrix, unit = _view_matrix(scene, bp.aspect, size)
    _DRAWERS[bp.family](_Pen(ImageDraw.Draw(layer), matrix, unit), look)
    box = layer.getbbox()  # the monument is always framed in view
    rgba = np.asarray(layer.crop(box), dtype=np.float32)
    x = np.linspace(box[0], box[2], rgba.shape[1], dtype=np.float32) / size
    ramp = 1 + scene.shade * (2 * x[None, :, None] - 1)
    haze = np.asarray(scene.sky[1], np.float32) * scene.haze
    rgba[..., :3] = np.clip(rgba[..., :3] * ramp * (1 - scene.haze) + haze, 0, 255)
    layer.paste(Image.fromarray(rgba.astype(np.uint8), "RGBA"), box[:2])
    return layer


def _tree(draw: ImageDraw.ImageDraw, x: float, y: float, h: float, colour: RGB) -> None:
    """A small tree of height ``h`` standing at (x, y)."""
    draw.rectangle([x - h * 0.05, y - h * 0.45, x + h * 0.05, y], fill=(80, 60, 40))
    draw.ellipse([x - h * 0.3, y - h, x + h * 0.3, y - h * 0.35], fill=colour)


def _pole(draw: ImageDraw.ImageDraw, x: float, y: float, h: float, size: int) -> None:
    """A lamp post."""
    draw.line([(x, y), (x, y - h)], fill=(50, 50, 55), width=max(1, round(0.008 * size)))
    r = 0.015 * size
    draw.ellipse([x - r, y - h - r / 2, x + r, y - h + r / 2], fill=(230, 220, 160))


def _person(draw: ImageDraw.ImageDraw, x: float, y: float, h: float, colour: RGB) -> None:
    """A person-blob of height ``h`` standing at (x, y)."""
    draw.ellipse([x - h * 0.17, y - h * 0.8, x + h * 0.17, y], fill=colour)
    draw.ellipse([x - h * 0.1, y - h, x + h * 0.1, y - h * 0.78], fill=(200, 160, 130))


def _ground_y(scene: Scene, rng: np.random.Generator, size: int) -> float:
    """A random foot position on the ground in front of the monument, in pixels."""
    return rng.uniform(max(scene.horizon, scene.base_y - 0.05), 1.02) * size


def _big_tree(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A large tree at the left or right edge."""
    x, r = float(rng.choice([0.0, 1.0])) * size, rng.uniform(0.2, 0.35) * size
    y = rng.uniform(0.2, 0.6) * size
    draw.rectangle([x - r * 0.15, y, x + r * 0.15, size], fill=(60, 45, 30))
    draw.ellipse([x - r, y - r, x + r, y + r], fill=_pick(rng, _FOLIAGE))


def _wall(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A crenellated wall across the bottom of the frame."""
    top, colour = rng.uniform(0.75, 0.9) * size, _pick(rng, _MATERIAL_COLOURS)
    draw.rectangle([0, top, size, size], fill=colour)
    for x in np.arange(rng.uniform(0, 0.1), 1, 0.12) * size:
        draw.rectangle([x, top - 0.04 * size, x + 0.03 * size, size], fill=colour)


def _car(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A car in the foreground."""
    x, w = rng.uniform(0, 0.7) * size, rng.uniform(0.25, 0.4) * size
    y, colour = rng.uniform(0.85, 0.98) * size, _pick(rng, _MATERIAL_COLOURS)
    draw.rounded_rectangle([x, y - 0.3 * w, x + w, y], 0.08 * w, fill=colour)
    for wx in (x + 0.2 * w, x + 0.8 * w):
        draw.ellipse([wx - 0.1 * w, y - 0.1 * w, wx + 0.1 * w, y + 0.1 * w], fill=(20, 20, 20))


def _branch(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A leafy branch reaching in from a top corner."""
    x0 = float(rng.choice([0.0, 1.0])) * size
    x1, y1 = abs(x0 - rng.uniform(0.3, 0.6) * size), rng.uniform(0.1, 0.35) * size
    draw.line([(x0, 0), (x1, y1)], fill=(60, 45, 30), width=max(1, round(0.02 * size)))
    for t in rng.uniform(0.2, 1.0, 8):
        x, y, r = x0 + (x1 - x0) * t, y1 * t, rng.uniform(0.02, 0.05) * size
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_pick(rng, _FOLIAGE))


_OCCLUDERS: dict[str, Callable[[ImageDraw.ImageDraw, np.random.Generator, int], None]] = {
    "tree": _big_tree,
    "wall": _wall,
    "car": _car,
    "branch": _branch,
}


def _clutter(image: Image.Image, scene: Scene, rng: np.random.Generator) -> None:
    """Trees, people, poles, birds and an optional occluder in front of the monument."""
    size = image.width
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(scene.trees):
        h = rng.uniform(0.1, 0.3) * size
        _tree(draw, rng.uniform(0, 1) * size, _ground_y(scene, rng, size), h, _pick(rng, _FOLIAGE))
    for _ in range(scene.people):
        r, g, b = (int(c) for c in rng.integers(20, 240, 3))
        h = rng.uniform(0.04, 0.1) * size
        _person(draw, rng.uniform(0, 1) * size, _ground_y(scene, rng, size), h, (r, g, b))
    for _ in range(scene.poles):
        x, y = rng.uniform(0, 1) * size, _ground_y(scene, rng, size)
        _pole(draw, x, y, rng.uniform(0.2, 0.5) * size, size)
    for _ in range(scene.birds):
        x, y, w = rng.uniform(0, 1) * size, rng.uniform(0.05, 0.4) * size, 0.02 * size
        width = max(1, round(0.004 * size))
        draw.line([(x - w, y - w / 2), (x, y), (x + w, y - w / 2)], fill=(30, 30, 30), width=width)
    if scene.occluder:
        _OCCLUDERS[scene.occluder](draw, rng, size)


def _light_and_noise(image: Image.Image, scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Global exposure, contrast, colour cast, optional blur and sensor noise."""
    if scene.blur:
        image = image.filter(ImageFilter.GaussianBlur(scene.blur))
    arr = np.asarray(image, dtype=np.float32)
    mean = arr.mean()
    arr = ((arr - mean) * scene.contrast + mean) * scene.brightness
    arr *= np.asarray(scene.tint, np.float32)
    arr += rng.normal(0, scene.noise, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render_monument(bp: LandmarkBlueprint, rng: np.random.Generator, size: int) -> Image.Image:
    """One RGB photo of the monument ``bp`` in a random scene drawn from ``rng``."""
    scene = _random_scene(rng)
    big = size * _SUPERSAMPLE
    image = _backdrop(scene, rng, big)
    layer = _monument_layer(bp, scene, big)
    image.paste(layer, mask=layer.getchannel("A"))
    _clutter(image, scene, rng)
    return _light_and_noise(image.reduce(_SUPERSAMPLE), scene, rng)


# --- the tree and its cache ---------------------------------------------------------------


def _normalise(categories: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Validate a category -> landmarks map; ``None`` means the study's full table."""
    if categories is None:
        return dict(STUDY_LANDMARKS)
    unknown = set(categories) - set(_DRAWERS)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {sorted(_DRAWERS)}")
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
    rng = _rng("image", seed, category, landmark, index)
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
