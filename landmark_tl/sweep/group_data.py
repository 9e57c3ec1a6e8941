"""A head batch's data: the frozen backbone, the set-up data module and each split's tensors,
set up once and shared with the next group that reads the same data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from landmark_tl.config.schema import TrainConfig
from landmark_tl.data.datamodule import LandmarkDataModule, mapped_split
from landmark_tl.sweep.grouping import shared_items
from landmark_tl.sweep.vectorised import SplitTensors
from landmark_tl.training.build import prepare_data


def split_tensors(datamodule: LandmarkDataModule, split: str) -> SplitTensors:
    """``split``'s inputs and targets in dataset order, as the probes read them: the stored
    rows themselves when they exceed ``features.memory_mb`` (read a batch at a time), else
    all of them in memory, read through the data module's own loader."""
    loader = getattr(datamodule, f"{split}_dataloader")()
    mapped = mapped_split(loader.dataset)
    if mapped is not None:
        return SplitTensors(*mapped)
    ordered = DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)
    xs, categories, landmarks = [], [], []
    for x, category, landmark in ordered:
        xs.append(x.float())
        categories.append(category)
        landmarks.append(landmark)
    if not xs:  # an empty split: never trained or tested on
        empty = torch.zeros(0, dtype=torch.long)
        return SplitTensors(torch.zeros(0, 0), {"category": empty, "landmark": empty})
    return SplitTensors(
        torch.cat(xs), {"category": torch.cat(categories), "landmark": torch.cat(landmarks)}
    )


@dataclass
class PreparedData:
    """A group's data: the frozen backbone, the set-up data module, each split's tensors."""

    backbone: Any
    datamodule: LandmarkDataModule
    splits: dict[str, SplitTensors]


class SharedData:
    """The data set-up of the last group, reused by the next group that reads the same
    data (a multirun's groups mostly differ only in their heads): one backbone, catalog
    scan, split and feature read for all of them instead of one per group. Only the last
    is kept, so memory does not grow with the number of distinct data sets."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.prepared: PreparedData | None = None

    def get(self, config: TrainConfig) -> PreparedData:
        key = data_key(config)
        if self.prepared is None or key != self.key:
            self.key, self.prepared = key, prepare_group_data(config)
        return self.prepared


def data_key(config: TrainConfig) -> str:
    """Equal for two groups' configs exactly when :func:`prepare_group_data` gives both the
    same: the data, backbone, feature and path settings, the accelerator, and the seed
    where it changes the features (see :func:`~landmark_tl.sweep.grouping.shared_items`)."""
    seed = shared_items(config).get("seed")
    parts = (config.data, config.backbone, config.features, config.paths, seed)
    return repr((*parts, config.trainer.accelerator))


def prepare_group_data(config: TrainConfig) -> PreparedData:
    """The backbone, set-up data module and split tensors of ``config``'s group."""
    backbone, datamodule = prepare_data(config)
    splits = {s: split_tensors(datamodule, s) for s in ("train", "val", "test")}
    return PreparedData(backbone, datamodule, splits)
