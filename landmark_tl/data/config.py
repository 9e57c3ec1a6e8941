"""The ``data`` group's schema: the keys every data source shares.

Each source's config dataclass subclasses :class:`DataConfig` with its own keys (``data.manifest``,
``data.clean`` ...) and registers with its :class:`~landmark_tl.data.sources.base.ImageSource`
(:mod:`landmark_tl.data.sources.registry`), so ``data=<source>`` composes with typed keys
where users type them. The schema lives in the data layer, as the strategies' configs live
with the strategies; :mod:`landmark_tl.config.schema` puts it in :class:`TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from omegaconf import MISSING

from landmark_tl.core.errors import ConfigError
from landmark_tl.data.sampling import Sampler
from landmark_tl.data.split_spec import SmallLandmarks, SplitSpec
from landmark_tl.data.transforms import Augment


class DataVerify(str, Enum):
    stamp = "stamp"  # the catalog index trusts a file whose size and mtime are unchanged
    digest = "digest"  # every file is read and hashed on every run (and shard sets checked)


@dataclass
class SplitConfig:
    """Per landmark: a count (≥ 1, whole) or a fraction (< 1) of images for val and test."""

    val: float = 2
    test: float = 3
    seed: int = 0
    # landmarks with fewer than val + test + 1 images: error (refuse), train_only, drop
    small: SmallLandmarks = SmallLandmarks.error

    def to_spec(self) -> SplitSpec:
        """The split as the library takes it (whole numbers as image counts); SplitSpec
        refuses what cannot work, naming the key."""

        def amount(value: float) -> int | float:
            return int(value) if float(value).is_integer() else value

        return SplitSpec(
            val=amount(self.val), test=amount(self.test), seed=self.seed, small=self.small
        )


@dataclass
class ColumnsConfig:
    """CSV column names (manifest: image path, landmark, category; gldv2: see conf/data)."""

    path: str = "path"
    landmark: str = "landmark"
    category: str = "category"


@dataclass
class DataConfig:
    """What every source takes; a source's config dataclass subclasses this, its own fields
    are its keys, and its ``source`` default is the name it registers (data.source)."""

    source: str = MISSING  # conf/data/<source>.yaml
    root: str | None = None  # required by every source that reads a user's files
    min_images_per_landmark: int = 1  # smaller landmarks are dropped (and listed)
    split: SplitConfig = field(default_factory=SplitConfig)
    split_file: str | None = None  # reuse the split.csv of another run
    augment: Augment = Augment.none
    noise_variance: float = 0.2  # of the study view's Gaussian noise, on the [0, 1] scale
    # augment=timm: timm's policy; rand-n1-mstd101 is TrivialAugment-like, "" none
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.25  # augment=timm: probability of erasing a random box
    batch_size: int = 32
    num_workers: int | None = None  # loader workers decoding images; null: one per CPU
    # training batches: shuffled (none) or class-balanced (balanced: items drawn with
    # probability ∝ n_landmark ** -balance_power, with replacement; torch's
    # WeightedRandomSampler)
    sampler: Sampler = Sampler.none
    balance_power: float = 1.0  # 1: every landmark equally often; 0.5: square root
    # what the catalog index trusts: stamp (unchanged size and mtime mean unchanged bytes)
    # or digest (every file read and hashed each run; shard sets checked against shards.json)
    verify: DataVerify = DataVerify.stamp
    # images that would decode to more pixels (JPEGs reduced as far as the model's input
    # allows) are skipped and reported; null: no limit (Pillow's bomb check still applies)
    max_pixels: int | None = 40_000_000
    # seconds a DataLoader waits for a batch from its workers before the run stops naming
    # the cause (a hung read, workers out of shared memory); 0: wait forever
    timeout_s: float = 600

    def required_root(self) -> Path:
        """``data.root``, expanded; a ConfigError naming the key when it is not given."""
        if not self.root:
            raise ConfigError(
                f"data={self.source} needs data.root=/path/to/data (see "
                f"landmark_tl/conf/data/{self.source}.yaml)"
            )
        return Path(self.root).expanduser()

    def problems(self) -> list[str]:
        """The source's own keys outside what can work, as ``key=value: must be ...``
        lines (the shared keys are checked with the rest of the config)."""
        return []
