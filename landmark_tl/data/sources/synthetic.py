"""``data=synthetic``: the embedded synthetic-monuments set (6 categories x 5 landmarks),
generated once into ``<paths.cache_dir>/datasets`` and read as a folder tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from landmark_tl.data.config import DataConfig
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.sources.registry import register_source


@dataclass
class SyntheticConfig(DataConfig):
    source: str = "synthetic"
    images_per_landmark: int = 14
    image_size: int = 224  # pixels per side
    synthetic_seed: int = 0

    def problems(self) -> list[str]:
        checks = [
            ("data.images_per_landmark", self.images_per_landmark, 1),
            ("data.image_size", self.image_size, 32),
        ]
        return [
            f"{key}={value}: must be >= {least}" for key, value, least in checks if value < least
        ]


@register_source(SyntheticConfig)
class SyntheticSource(FolderSource):
    """The generated tree, read as :class:`FolderSource` reads any (its catalog index too)."""

    needs_root = False

    @classmethod
    def from_config(cls, data: SyntheticConfig, cache_dir: Path) -> SyntheticSource:
        # the image generator is imported only by runs that use it
        from landmark_tl.data.synthetic.generate import ensure_synthetic_dataset

        root = ensure_synthetic_dataset(
            cache_dir / "datasets",
            images_per_landmark=data.images_per_landmark,
            image_size=data.image_size,
            seed=data.synthetic_seed,
        )
        return cls(root)
