"""Data sources: where a data set's images are and what their labels are, one module each,
registered by name (:mod:`landmark_tl.data.sources.registry`); ``data.source`` picks one.

Importing this package registers the built-in sources (folder, manifest, gldv2, shards,
synthetic); a new one registers itself with ``@register_source``. What every source is
(candidates, listings, the symbolic-link policy): :mod:`landmark_tl.data.sources.base`.
"""

from landmark_tl.data.sources.base import Candidate, Columns, ImageSource, Listing
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.sources.gldv2 import GLDv2Source
from landmark_tl.data.sources.manifest import ManifestSource
from landmark_tl.data.sources.registry import (
    SOURCES,
    build_source,
    register_source,
    registered_source,
)
from landmark_tl.data.sources.shards import ShardSource
from landmark_tl.data.sources.synthetic import SyntheticSource

__all__ = [
    "SOURCES",
    "Candidate",
    "Columns",
    "FolderSource",
    "GLDv2Source",
    "ImageSource",
    "Listing",
    "ManifestSource",
    "ShardSource",
    "SyntheticSource",
    "build_source",
    "register_source",
    "registered_source",
]
