"""Each architectural family's form, drawn in monument coordinates from a blueprint's traits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from landmark_tl.data.synthetic.blueprints import RGB, LandmarkBlueprint, mix

Point = tuple[float, float]


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
            shade = bp.body if i % 2 == 0 else mix(bp.body, (0, 0, 0), 0.15)
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
        _arch(pen, x, 0, 0.1, 0.3 * nave_h, mix(bp.accent, (0, 0, 0), 0.4))
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
        _windows(pen, x0, x1, steps, cornice, 3, bp.tiers, mix(bp.body, (0, 0, 0), 0.45))
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
        pen.rect(-0.5, cornice, 0.5, top, mix(bp.body, (255, 255, 255), 0.3))
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

FAMILIES = tuple(_DRAWERS)  # the categories a synthetic tree can hold


def draw_monument(
    draw: ImageDraw.ImageDraw, matrix: np.ndarray, unit: float, bp: LandmarkBlueprint
) -> None:
    """Draw ``bp``'s form through ``matrix`` (3x3: monument coordinates -> pixels);
    ``unit`` pixels per monument unit set the line widths."""
    _DRAWERS[bp.family](_Pen(draw, matrix, unit), bp)
