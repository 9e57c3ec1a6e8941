"""Synthetic monuments: a seeded, cached, two-level image data set (category / landmark).

Each category is an architectural family drawn by its form; each landmark is a fixed
:class:`~.blueprints.LandmarkBlueprint` of finer traits (proportions, tier count, ornaments,
colours) that every one of its images draws. Every image varies a :class:`~.render.Scene`
of nuisances (viewpoint, framing, sky, ground, light, clutter, noise), so no single pixel
statistic gives the label. The tree is an ordinary image folder:
``<root>/<category>/<landmark>/<n>.png``.

One module per concern: :mod:`.blueprints` (the study's table, each landmark's traits, the
seeding), :mod:`.drawing` (each family's form in monument coordinates), :mod:`.render` (one
photo of a monument in a random scene) and :mod:`.generate` (the tree, generated once into
a cache).
"""
