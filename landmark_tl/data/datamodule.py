"""LightningDataModule: catalog → split → decoded images → views (→ frozen features)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from landmark_tl.data.catalog import Catalog, CatalogError, ImageRecord, build_catalog, load_rgb
from landmark_tl.data.features import FeatureCache, view_features
from landmark_tl.data.longtail import drop_small_landmarks
from landmark_tl.data.sampling import BalancedSampler, Sampler
from landmark_tl.data.sources import ImageSource
from landmark_tl.data.sources.folder import FolderSource
from landmark_tl.data.splits import SPLITS, SplitSpec, assign_splits
from landmark_tl.data.transforms import (
    RANDOM_AUGMENTS,
    Augment,
    TimmAugmentation,
    View,
    geometry_transform,
    original,
    random_augmentation,
    to_uint8_tensor,
    training_views,
)
from landmark_tl.errors import ConfigError
from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.io import printable
from landmark_tl.models.backbone import Backbone, Preprocessing

log = logging.getLogger(__name__)


def decode_images(
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    workers: int | None = None,
    open_image: Callable[[Path], BinaryIO] | None = None,
) -> torch.Tensor:
    """Decode, orient and resize every image once: uint8 (N, 3, H, W) at the model's geometry.

    ``open_image`` opens an image's bytes (e.g. :meth:`Catalog.open`); default: the file.
    The images were read by the catalog's scan; one that fails now was deleted or changed
    since, and raises CatalogError naming it.
    """
    geometry = geometry_transform(preprocessing)
    opener = open_image or (lambda path: open(path, "rb"))  # noqa: SIM115 (closed below)

    def decode(path: Path) -> torch.Tensor:
        try:
            with opener(path) as f:
                return to_uint8_tensor(geometry(load_rgb(f)))
        except Exception as error:  # the scan decoded it: any failure is a change since
            raise CatalogError(
                f"{printable(str(path))}: deleted or changed after the scan "
                f"({type(error).__name__}: {str(error)[:200]}); restore it and run again "
                "(a new scan skips and reports unreadable files)"
            ) from error

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        return torch.stack(list(pool.map(decode, paths)))


class FeatureDataset(TensorDataset):
    """Precomputed features and labels; a batch is fetched with one slice per tensor."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors)


def _already_batched(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch


def item_landmarks(dataset: Dataset) -> torch.Tensor:
    """The landmark index of every item of a dataset of this module, in item order."""
    if isinstance(dataset, FeatureDataset):
        return dataset.tensors[2]
    per_image = dataset.landmarks  # ViewDataset: item i is a view of image i // V
    return per_image.repeat_interleave(len(dataset) // max(1, len(per_image)))


class ViewDataset(Dataset):
    """Every fixed view of every image: item ``i`` is view ``i % V`` of image ``i // V``."""

    def __init__(
        self,
        images: torch.Tensor,
        categories: torch.Tensor,
        landmarks: torch.Tensor,
        views: Sequence[View],
    ) -> None:
        self.images, self.categories, self.landmarks = images, categories, landmarks
        self.views = list(views)

    def __len__(self) -> int:
        return len(self.images) * len(self.views)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, v = divmod(i, len(self.views))
        return self.views[v](self.images[n]), self.categories[n], self.landmarks[n]


class RandomViewDataset(Dataset):
    """Each image once, through a random transform drawn anew at every access."""

    def __init__(
        self,
        images: torch.Tensor,
        categories: torch.Tensor,
        landmarks: torch.Tensor,
        transform: View,
    ) -> None:
        self.images, self.categories, self.landmarks = images, categories, landmarks
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.categories[i], self.landmarks[i]


class LandmarkDataModule(L.LightningDataModule):
    """Batches of (image or frozen feature, category index, landmark index).

    With ``feature_encoder`` set (a frozen backbone), every image and training view goes
    through it once in :meth:`setup` (or comes from ``feature_cache``), and batches carry
    (N, D) features instead of (N, 3, H, W) uint8 images. Images are decoded and resized
    once per run either way.
    """

    def __init__(
        self,
        source: ImageSource | str | Path,
        preprocessing: Preprocessing,
        *,
        split: SplitSpec | None = None,
        split_file: str | Path | None = None,
        min_images_per_landmark: int = 1,
        augment: Augment | str = Augment.none,
        noise_variance: float = 0.2,
        random_views: int = 0,
        auto_augment: str = "rand-m9-mstd0.5-inc1",
        random_erasing: float = 0.25,
        batch_size: int = 32,
        num_workers: int = 0,
        sampler: Sampler | str = Sampler.none,
        balance_power: float = 1.0,
        feature_encoder: Backbone | None = None,
        feature_cache: FeatureCache | None = None,
        feature_device: torch.device | str = "cpu",
        feature_batch_size: int = 64,
        feature_autocast: torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = source if isinstance(source, ImageSource) else FolderSource(source)
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
        self.num_workers = num_workers
        self.sampler = Sampler(sampler)
        self.balance_power = balance_power
        self.feature_encoder = feature_encoder
        self.feature_cache = feature_cache
        self.feature_device = feature_device
        self.feature_batch_size = feature_batch_size
        self.feature_autocast = feature_autocast
        self.seed = seed
        self.catalog: Catalog | None = None
        self.assignment: list[str] = []
        self.datasets: dict[str, Dataset] = {}
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
        """Scan, split, then decode images or fetch/compute their features; runs once."""
        if self.datasets:
            return
        self.catalog = drop_small_landmarks(
            build_catalog(self.source), self.min_images_per_landmark, self.split_spec
        )
        self.assignment = assign_splits(self.catalog, self.split_spec, self.split_file)
        categories, landmarks = (torch.tensor(x) for x in self.catalog.labels())
        indices = {s: [i for i, a in enumerate(self.assignment) if a == s] for s in SPLITS}
        if self.feature_encoder is None:
            images = decode_images(
                [r.path for r in self.catalog.records],
                self.preprocessing,
                open_image=self.catalog.open,
            )
            for split, idx in indices.items():
                self.datasets[split] = self._image_dataset(
                    split, images[idx], categories[idx], landmarks[idx]
                )
        else:
            digests = self.catalog.content_digests()
            for split, idx in indices.items():
                self.datasets[split] = self._feature_dataset(
                    split, idx, digests, categories[idx], landmarks[idx]
                )
        log.info("split sizes: %s", {k: len(v) for k, v in self.datasets.items()})

    def _image_dataset(
        self, split: str, images: torch.Tensor, categories: torch.Tensor, landmarks: torch.Tensor
    ) -> Dataset:
        if split == "train" and self.augment in RANDOM_AUGMENTS:
            size = self.preprocessing.input_size[1:]
            transform = self.timm_augment or random_augmentation(size)
            return RandomViewDataset(images, categories, landmarks, transform)
        views = list(self.views(split).values())
        return ViewDataset(images, categories, landmarks, views)

    def _feature_dataset(
        self,
        split: str,
        indices: list[int],
        digests: list[str],
        categories: torch.Tensor,
        landmarks: torch.Tensor,
    ) -> FeatureDataset:
        paths = [self.catalog.records[i].path for i in indices]
        views = self.views(split)
        features = view_features(
            self.feature_encoder,
            [digests[i] for i in indices],
            views,
            lambda subset: decode_images(
                [paths[j] for j in subset], self.preprocessing, open_image=self.catalog.open
            ),
            cache=self.feature_cache,
            batch_size=self.feature_batch_size,
            device=self.feature_device,
            autocast=self.feature_autocast,
        )
        repeat = len(views)
        return FeatureDataset(
            features, categories.repeat_interleave(repeat), landmarks.repeat_interleave(repeat)
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None
        if shuffle and self.sampler is Sampler.balanced:
            sampler = BalancedSampler(item_landmarks(dataset), self.balance_power, self.seed)
            shuffle = False
        if isinstance(dataset, FeatureDataset):  # tensors in memory: no workers, no collation
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
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
