"""LightningDataModule: catalog → split → images streamed through loader workers → views
(→ frozen features in the sharded store)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from landmark_tl.core.errors import ConfigError
from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.core.io import printable
from landmark_tl.data.catalog import Catalog, build_catalog, paused_gc
from landmark_tl.data.decode import load_rgb, strict_decoding
from landmark_tl.data.features.extraction import Encoder, fill_store, pass_batch_size
from landmark_tl.data.features.store import FeatureRows, FeatureStore
from landmark_tl.data.index import CatalogIndex, Verify
from landmark_tl.data.longtail import drop_small_landmarks
from landmark_tl.data.records import CatalogError, ImageRecord, NamedBytes, Problem
from landmark_tl.data.sampling import BalancedSampler, Sampler, ShardSampler
from landmark_tl.data.sources import ImageSource
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.sources.shards import ShardSource
from landmark_tl.data.splits import SPLITS, SplitSpec, assign_splits
from landmark_tl.data.transforms import (
    RANDOM_AUGMENTS,
    Augment,
    Preprocessing,
    TimmAugmentation,
    View,
    geometry_transform,
    original,
    random_augmentation,
    to_uint8_tensor,
    training_views,
)

log = logging.getLogger(__name__)


class ImageDecoder:
    """Reads a catalog image's bytes and decodes them upright, resized and cropped to the
    model's geometry, as a uint8 (3, H, W) tensor. Used inside loader workers. A JPEG is
    decoded reduced as far as it stays at least the size the resize step asks for (timm's
    eval resize: the input size over ``crop_pct``), so a large photo never decodes in full."""

    def __init__(self, catalog: Catalog, preprocessing: Preprocessing) -> None:
        self.catalog = catalog
        self.geometry = geometry_transform(preprocessing)
        side = math.ceil(max(preprocessing.input_size[1:]) / preprocessing.crop_pct)
        self.draft = (side, side)
        self.max_pixels = catalog.source.max_pixels if catalog.source is not None else None

    def read(self, i: int) -> bytes:
        """The bytes of catalog record ``i``."""
        return self.catalog.read(self.catalog.records[i].path)

    def decode(self, data: bytes, i: int) -> torch.Tensor:
        """Record ``i``'s bytes ``data`` decoded at the model's geometry."""
        name = str(self.catalog.records[i].path)
        with strict_decoding():  # a truncated file fails here, as it would in the scan
            image = load_rgb(NamedBytes(data, name), draft=self.draft, max_pixels=self.max_pixels)
        return to_uint8_tensor(self.geometry(image))

    def __call__(self, i: int) -> torch.Tensor:
        """Record ``i`` read and decoded; CatalogError naming it when that fails now (the
        catalog read it, so it was deleted or changed since)."""
        try:
            return self.decode(self.read(i), i)
        except Exception as error:
            raise CatalogError(
                f"{printable(str(self.catalog.records[i].path))}: deleted or changed after the "
                f"scan ({type(error).__name__}: {str(error)[:200]}); restore it and run again "
                "(a new scan skips and reports unreadable files)"
            ) from error


class ImageDataset(Dataset):
    """Every view of some catalog images, decoded when asked (in loader workers, a batch at
    a time; nothing holds the decoded images): item ``i`` is view ``i % V`` of image
    ``indices[i // V]``. A random transform as the one view draws anew at every access."""

    def __init__(
        self,
        decoder: ImageDecoder,
        indices: Sequence[int],
        categories: torch.Tensor,
        landmarks: torch.Tensor,
        views: Sequence[View],
    ) -> None:
        self.decoder, self.indices = decoder, list(indices)
        self.categories, self.landmarks = categories, landmarks
        self.views = list(views)

    def __len__(self) -> int:
        return len(self.indices) * len(self.views)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, v = divmod(i, len(self.views))
        image = self.decoder(self.indices[n])
        return self.views[v](image), self.categories[n], self.landmarks[n]


class FeatureDataset(Dataset):
    """Stored features (memory-mapped rows) and labels; a batch is fetched at once."""

    def __init__(
        self, rows: FeatureRows, categories: torch.Tensor, landmarks: torch.Tensor
    ) -> None:
        self.rows, self.categories, self.landmarks = rows, categories, landmarks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.rows[index.numpy()], self.categories[index], self.landmarks[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([i]))


def mapped_split(dataset: Dataset) -> tuple[FeatureRows, dict[str, torch.Tensor]] | None:
    """A split's stored rows and targets (in item order) when they are read from the mapped
    shards (they exceed ``features.memory_mb``), for fits to read a chunk at a time; None
    when the split's features are in memory (or it serves images)."""
    if isinstance(dataset, FeatureDataset) and dataset.rows.memory is None:
        return dataset.rows, {"category": dataset.categories, "landmark": dataset.landmarks}
    return None


def _already_batched(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch


def item_landmarks(dataset: Dataset) -> torch.Tensor:
    """The landmark index of every item of a dataset of this module, in item order."""
    if isinstance(dataset, FeatureDataset):  # labels already repeated per view
        return dataset.landmarks
    return dataset.landmarks.repeat_interleave(len(dataset.views))  # ImageDataset


class LandmarkDataModule(L.LightningDataModule):
    """Batches of (image or frozen feature, category index, landmark index).

    Images are read and decoded in ``num_workers`` loader workers (default: one per CPU), a
    batch at a time. With ``feature_encoder`` set (a frozen backbone), :meth:`setup` fills
    ``feature_store`` with the rows it lacks for every image and view (one streaming pass),
    and batches carry (N, D) features read from the store's memory-mapped shards (gathered
    into memory when they fit ``feature_memory`` bytes) instead of (N, 3, H, W) images.
    ``index`` is the catalog index the source is read through (None: read every file).
    Loaders with workers wait at most ``loader_timeout`` seconds for a batch (0: forever);
    a worker that dies or times out stops the run with torch's reason.
    """

    def __init__(
        self,
        source: ImageSource | str | Path,
        preprocessing: Preprocessing,
        *,
        index: CatalogIndex | None = None,
        split: SplitSpec | None = None,
        split_file: str | Path | None = None,
        min_images_per_landmark: int = 1,
        augment: Augment | str = Augment.none,
        noise_variance: float = 0.2,
        random_views: int = 0,
        auto_augment: str = "rand-m9-mstd0.5-inc1",
        random_erasing: float = 0.25,
        batch_size: int = 32,
        num_workers: int | None = None,
        sampler: Sampler | str = Sampler.none,
        balance_power: float = 1.0,
        feature_encoder: Encoder | None = None,
        feature_store: FeatureStore | None = None,
        feature_device: torch.device | str = "cpu",
        feature_batch_size: int | None = None,
        feature_autocast: torch.dtype | None = None,
        feature_memory: int = 64 << 20,
        loader_timeout: float = 600,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = source if isinstance(source, ImageSource) else FolderSource(source)
        self.index = index
        self.preprocessing = preprocessing
        self.split_spec = split or SplitSpec()
        self.split_file = Path(split_file) if split_file else None
        self.min_images_per_landmark = min_images_per_landmark
        self.augment = Augment(augment)
        self.timm_augment = (
            TimmAugmentation(preprocessing, auto_augment, random_erasing)
            if self.augment is Augment.timm
            else None
        )
        self.noise_variance = noise_variance
        self.random_views = random_views
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.sampler = Sampler(sampler)
        self.balance_power = balance_power
        self.feature_encoder = feature_encoder
        self.feature_store = feature_store
        self.feature_device = feature_device
        self.feature_batch_size = feature_batch_size or pass_batch_size(
            feature_device, preprocessing.input_size
        )
        self.feature_autocast = feature_autocast
        self.feature_memory = feature_memory
        self.loader_timeout = loader_timeout
        self.seed = seed
        self.catalog: Catalog | None = None
        self.assignment: list[str] = []
        self.datasets: dict[str, Dataset] = {}
        if feature_encoder is not None and feature_store is None:
            raise ValueError("feature_encoder needs a feature_store to keep its features in")
        if feature_encoder is not None and self.augment in RANDOM_AUGMENTS and random_views < 1:
            raise ConfigError(
                f"data.augment={self.augment.value} with a frozen backbone caches a fixed "
                "number of random views per image: set features.random_views to 1 or more (or "
                "features.cache=false to draw new views every epoch, recomputing features)"
            )

    @property
    def hierarchy(self) -> LabelHierarchy:
        if self.catalog is None:
            raise RuntimeError("call setup() before reading the hierarchy")
        return self.catalog.hierarchy

    def records(self, split: str) -> list[ImageRecord]:
        """Catalog records of ``split``, in the order its dataset serves them."""
        if self.catalog is None:
            raise RuntimeError("call setup() before asking for records")
        return [r for r, a in zip(self.catalog.records, self.assignment, strict=True) if a == split]

    def views(self, split: str) -> dict[str, View]:
        """Fixed views of ``split``'s images: training views for train, the original else."""
        if split != "train":
            return {"original": original}
        random_views = self.random_views if self.feature_encoder is not None else 0
        return training_views(
            self.augment,
            self.noise_variance,
            random_views,
            self.preprocessing.input_size[1:],
            self.seed,
            self.timm_augment,
        )

    def setup(self, stage: str | None = None) -> None:
        """Read the catalog (through the index), split, then serve streamed images or
        stored features (computing the missing ones first); runs once."""
        if self.datasets:
            return
        # with a feature pass to come, it is the one full decode: the catalog reads headers
        verify = Verify.header if self.feature_encoder is not None else Verify.decode
        with paused_gc():
            catalog = build_catalog(self.source, index=self.index, verify=verify)
            self.catalog = drop_small_landmarks(
                catalog, self.min_images_per_landmark, self.split_spec
            )
            self.assignment = assign_splits(self.catalog, self.split_spec, self.split_file)
        if self.feature_encoder is not None:
            self._fill_store()  # a long pass: with the collector
        with paused_gc():
            self._make_datasets()
        log.info("split sizes: %s", {k: len(v) for k, v in self.datasets.items()})

    def _make_datasets(self) -> None:
        """Each split's dataset: stored features, or images decoded as they are read."""
        categories, landmarks = (torch.tensor(x) for x in self.catalog.labels())
        indices = {s: [i for i, a in enumerate(self.assignment) if a == s] for s in SPLITS}
        decoder = ImageDecoder(self.catalog, self.preprocessing)
        located: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # view → rows of every image
        for split, idx in indices.items():
            labels = categories[idx], landmarks[idx]
            if self.feature_encoder is not None:
                self.datasets[split] = self._feature_dataset(split, idx, *labels, located)
            elif split == "train" and self.augment in RANDOM_AUGMENTS:
                size = self.preprocessing.input_size[1:]
                transform = self.timm_augment or random_augmentation(size)
                self.datasets[split] = ImageDataset(decoder, idx, *labels, [transform])
            else:
                views = list(self.views(split).values())
                self.datasets[split] = ImageDataset(decoder, idx, *labels, views)

    def _fill_store(self) -> None:
        """Compute the store's missing rows (every image, every view of its split); images
        that cannot be read now, or changed since the catalog read them, are left out and
        reported (the run goes on without them)."""
        decoder = ImageDecoder(self.catalog, self.preprocessing)
        views: dict[str, View] = {}
        wanted: dict[str, list[int]] = {}
        for split in SPLITS:
            idx = [i for i, a in enumerate(self.assignment) if a == split]
            for name, view in self.views(split).items():
                views[name] = view
                wanted.setdefault(name, []).extend(idx)
        done = fill_store(
            self.feature_store,
            self.feature_encoder,
            self.catalog.content_digests(),
            wanted,
            views,
            decoder.read,
            decoder.decode,
            batch_size=self.feature_batch_size,
            num_workers=self.num_workers,
            device=self.feature_device,
            autocast=self.feature_autocast,
            timeout=self.loader_timeout,
        )
        if self.index is not None and (done.decoded or done.broken):
            # decoded: verified as a full decode; broken: later runs skip them unread
            digests, key = self.catalog.content_digests(), self.catalog.key
            records = self.catalog.records
            self.index.record_decoded(
                itertools.chain(
                    ((key(records[i].path), digests[i], None) for i in done.decoded),
                    (
                        (key(records[i].path), digests[i], f"unreadable: {why}")
                        for i, why in done.broken.items()
                    ),
                )
            )
        if done.failed:
            self._leave_out(done.failed, done.broken)

    def _leave_out(self, failed: dict[int, str], broken: dict[int, str]) -> None:
        """Drop the images the feature pass could not use from the catalog and the split,
        as problems: ``broken`` ones (fail to decode) for good, the others until they read."""
        records = self.catalog.records
        problems = [
            Problem(
                records[i].path,
                f"unreadable: {broken[i]} (found by the feature pass)"
                if i in broken
                else f"left out by the feature pass: {why}; run again to read it",
            )
            for i, why in sorted(failed.items())
        ]
        for problem in problems:
            log.warning("%s: %s", printable(str(problem.path)), problem.reason)
        keep = [i for i in range(len(records)) if i not in failed]
        self.catalog = dataclasses.replace(
            self.catalog,
            records=[records[i] for i in keep],
            problems=sorted([*self.catalog.problems, *problems], key=lambda p: str(p.path)),
        )
        self.assignment = [self.assignment[i] for i in keep]

    def _feature_dataset(
        self,
        split: str,
        indices: list[int],
        categories: torch.Tensor,
        landmarks: torch.Tensor,
        located: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> FeatureDataset:
        """Rows of every view of ``split``'s images, item ``i · V + v``. ``located`` holds
        the (shard id, row) of every catalog image per view, filled as views are first
        asked for: one scan of the store's index per view, whatever the splits."""
        names = list(self.views(split))
        for name in names:
            if name not in located:
                located[name] = self.feature_store.locate(name, self.catalog.content_digests())
        shard_ids = np.stack([located[name][0][indices] for name in names], axis=1).reshape(-1)
        rows = np.stack([located[name][1][indices] for name in names], axis=1).reshape(-1)
        repeat = len(names)
        return FeatureDataset(
            FeatureRows(self.feature_store, shard_ids, rows, self.feature_memory),
            categories.repeat_interleave(repeat),
            landmarks.repeat_interleave(repeat),
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None
        if shuffle and self.sampler is Sampler.balanced:
            sampler = BalancedSampler(item_landmarks(dataset), self.balance_power, self.seed)
            shuffle = False
        elif shuffle and isinstance(dataset, ImageDataset) and self._reads_shards_in_parallel():
            sampler = ShardSampler(dataset, self._item_shards(dataset), seed=self.seed)
            shuffle = False
        if isinstance(dataset, FeatureDataset):  # rows in memory or mapped: no workers
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=shuffle,
                sampler=sampler,
                collate_fn=_already_batched,
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            timeout=self.loader_timeout if self.num_workers > 0 else 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _reads_shards_in_parallel(self) -> bool:
        """Whether images come from tar shards to one of several data-parallel ranks
        (stored features are read from the feature store, not the shards)."""
        return isinstance(self.source, ShardSource) and _data_parallel()

    def _item_shards(self, dataset: ImageDataset) -> np.ndarray:
        """The number of the shard each item's image is read from, in item order."""
        records = self.catalog.records
        shards = [
            str(self.source.shard_of(self.catalog.key(records[i].path))) for i in dataset.indices
        ]
        numbers = np.unique(shards, return_inverse=True)[1]
        return np.repeat(numbers, len(dataset.views))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _data_parallel() -> bool:
    """Whether this process is one of several data-parallel ranks."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def default_workers() -> int:
    """Loader workers when ``data.num_workers`` is not set: one per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
