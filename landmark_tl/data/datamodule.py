"""LightningDataModule: catalog → split → decoded images → views (→ frozen features)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from landmark_tl.data.catalog import Catalog, ImageRecord, load_rgb, scan_image_folder
from landmark_tl.data.features import extract_features
from landmark_tl.data.splits import SplitSpec, read_split_csv, stratified_split
from landmark_tl.data.transforms import (
    Augment,
    View,
    geometry_transform,
    random_augmentation,
    to_uint8_tensor,
    training_views,
)
from landmark_tl.hierarchy import LabelHierarchy
from landmark_tl.models.backbone import Backbone, Preprocessing

log = logging.getLogger(__name__)


def decode_images(
    paths: Sequence[Path], preprocessing: Preprocessing, workers: int | None = None
) -> torch.Tensor:
    """Decode, orient and resize every image once: uint8 (N, 3, H, W) at the model's geometry."""
    geometry = geometry_transform(preprocessing)

    def decode(path: Path) -> torch.Tensor:
        return to_uint8_tensor(geometry(load_rgb(path)))

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        return torch.stack(list(pool.map(decode, paths)))


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

    With ``feature_encoder`` set (a frozen backbone), images and their training views pass
    through it once in :meth:`setup`, and batches carry (N, D) features instead of
    (N, 3, H, W) uint8 images.
    """

    def __init__(
        self,
        root: str | Path,
        preprocessing: Preprocessing,
        *,
        split: SplitSpec | None = None,
        split_file: str | Path | None = None,
        augment: Augment | str = Augment.none,
        noise_variance: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        feature_encoder: Backbone | None = None,
        feature_device: torch.device | str = "cpu",
        feature_batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.preprocessing = preprocessing
        self.split_spec = split or SplitSpec()
        self.split_file = Path(split_file) if split_file else None
        self.augment = Augment(augment)
        self.noise_variance = noise_variance
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.feature_encoder = feature_encoder
        self.feature_device = feature_device
        self.feature_batch_size = feature_batch_size
        self.catalog: Catalog | None = None
        self.assignment: list[str] = []
        self.datasets: dict[str, Dataset] = {}

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

    def setup(self, stage: str | None = None) -> None:
        """Scan, split, decode and (optionally) extract features; runs once."""
        if self.datasets:
            return
        self.catalog = scan_image_folder(self.root)
        if self.split_file:
            self.assignment = read_split_csv(self.split_file, self.catalog)
        else:
            self.assignment = stratified_split(self.catalog, self.split_spec)
        images = decode_images([r.path for r in self.catalog.records], self.preprocessing)
        categories, landmarks = (torch.tensor(x) for x in self.catalog.labels())
        for split in ("train", "val", "test"):
            keep = torch.tensor([a == split for a in self.assignment])
            self.datasets[split] = self._dataset(
                split, images[keep], categories[keep], landmarks[keep]
            )
        log.info("split sizes: %s", {k: len(v) for k, v in self.datasets.items()})

    def _dataset(
        self, split: str, images: torch.Tensor, categories: torch.Tensor, landmarks: torch.Tensor
    ) -> Dataset:
        if split == "train" and self.augment is Augment.random:
            if self.feature_encoder is not None:
                raise ValueError(
                    "data.augment=random draws new views every epoch, so it cannot use "
                    "precomputed frozen features; use data.augment=study or none, or "
                    "features.precompute=false"
                )
            size = self.preprocessing.input_size[1:]
            return RandomViewDataset(images, categories, landmarks, random_augmentation(size))
        views = training_views(
            self.augment if split == "train" else Augment.none, self.noise_variance
        )
        dataset = ViewDataset(images, categories, landmarks, list(views.values()))
        if self.feature_encoder is None:
            return dataset
        return TensorDataset(
            *extract_features(
                self.feature_encoder,
                dataset,
                batch_size=self.feature_batch_size,
                device=self.feature_device,
            )
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
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
