"""One photo of a monument: a random :class:`Scene` of nuisances (viewpoint, framing, sky,
ground, light, clutter, noise) around the monument a blueprint draws."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from landmark_tl.data.synthetic.blueprints import (
    MATERIAL_COLOURS,
    RGB,
    LandmarkBlueprint,
    mix,
    pick,
)
from landmark_tl.data.synthetic.drawing import Point, draw_monument

_SUPERSAMPLE = 2

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
_FOLIAGE: tuple[RGB, ...] = ((40, 90, 40), (70, 110, 50), (30, 70, 50), (110, 120, 50))


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


def _shift(colour: RGB, shift: Sequence[float]) -> RGB:
    """``colour`` plus a per-channel ``shift``, clipped to the valid range."""
    r, g, b = (int(np.clip(c + s, 0, 255)) for c, s in zip(colour, shift, strict=True))
    return r, g, b


def _random_scene(rng: np.random.Generator) -> Scene:
    """Draw the nuisances of one image."""
    sky = pick(rng, _SKIES)
    far = pick(rng, _GROUNDS)
    horizon = float(rng.uniform(0.55, 0.8))
    return Scene(
        horizon=horizon,
        sky=(_shift(sky[0], rng.normal(0, 12, 3)), _shift(sky[1], rng.normal(0, 12, 3))),
        ground=(far, mix(far, pick(rng, _GROUNDS), float(rng.uniform(0, 0.6)))),
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
        occluder=pick(rng, (None, None, None, None, *_OCCLUDERS)),
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
    draw_monument(ImageDraw.Draw(layer), matrix, unit, look)
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
    draw.ellipse([x - r, y - r, x + r, y + r], fill=pick(rng, _FOLIAGE))


def _wall(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A crenellated wall across the bottom of the frame."""
    top, colour = rng.uniform(0.75, 0.9) * size, pick(rng, MATERIAL_COLOURS)
    draw.rectangle([0, top, size, size], fill=colour)
    for x in np.arange(rng.uniform(0, 0.1), 1, 0.12) * size:
        draw.rectangle([x, top - 0.04 * size, x + 0.03 * size, size], fill=colour)


def _car(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A car in the foreground."""
    x, w = rng.uniform(0, 0.7) * size, rng.uniform(0.25, 0.4) * size
    y, colour = rng.uniform(0.85, 0.98) * size, pick(rng, MATERIAL_COLOURS)
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
        draw.ellipse([x - r, y - r, x + r, y + r], fill=pick(rng, _FOLIAGE))


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
        _tree(draw, rng.uniform(0, 1) * size, _ground_y(scene, rng, size), h, pick(rng, _FOLIAGE))
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
