"""Build the pieces of a run from a :class:`TrainConfig`: backbone, data, strategy.

Hydra-free: a notebook can call these with ``landmark_tl.compose([...])``'s config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from landmark_tl.config.schema import ConfigError, TrainConfig, validate_config
from landmark_tl.data import sources
from landmark_tl.data.catalog import Catalog, build_catalog
from landmark_tl.data.config import DataVerify
from landmark_tl.data.datamodule import LandmarkDataModule
from landmark_tl.data.features.extraction import encoder_key
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.index import CatalogIndex
from landmark_tl.data.longtail import drop_small_landmarks
from landmark_tl.data.sources import ImageSource
from landmark_tl.models.backbone import Backbone, create_backbone
from landmark_tl.models.finetuning import UnfreezeSchedule
from landmark_tl.models.optim import balanced_class_weights
from landmark_tl.models.strategies import TwoLevelStrategy, registered
from landmark_tl.models.strategies.registry import as_config_error, strategy_kwargs


def cache_dir(config: TrainConfig) -> Path:
    """``paths.cache_dir``, expanded; refused when it, or the nearest existing folder above
    it, is a file (it is created when missing)."""
    path = Path(config.paths.cache_dir).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside a file ({existing})"
        raise ConfigError(
            f"paths.cache_dir={path} {what}, not a folder: give a folder path (created if "
            "missing), or set the environment variable LANDMARK_TL_CACHE to one"
        )
    return path


def build_source(config: TrainConfig) -> ImageSource:
    """The data source ``data.source`` names (its registered class), built from ``data``."""
    return sources.build_source(config.data, cache_dir(config))


def catalog_index(config: TrainConfig, source: ImageSource) -> CatalogIndex:
    """The catalog index of ``source``, kept under ``paths.cache_dir``."""
    return CatalogIndex.for_source(
        cache_dir(config),
        source.name,
        source.root,
        max_pixels=config.data.max_pixels,
        rehash=config.data.verify is DataVerify.digest,
    )


def read_catalog(config: TrainConfig) -> Catalog:
    """Every image of the configured source, read through its catalog index (no filter)."""
    source = build_source(config)
    return build_catalog(source, index=catalog_index(config, source))


def load_catalog(config: TrainConfig) -> Catalog:
    """The catalog a run of ``config`` trains on (long-tail filters applied)."""
    catalog = read_catalog(config)
    spec = config.data.split.to_spec()
    return drop_small_landmarks(catalog, config.data.min_images_per_landmark, spec)


def build_backbone(config: TrainConfig) -> Backbone:
    b = config.backbone
    backbone = create_backbone(
        b.name,
        weights=b.weights,
        weights_file=b.weights_file,
        freeze=b.freeze,
        schedule=UnfreezeSchedule(b.unfreeze_at_epoch, b.unfreeze_last_blocks, b.lr_ratio),
        freeze_bn=b.freeze_bn,
        lr_ratio=b.lr_ratio,
        drop_path_rate=b.drop_path_rate,
        input_size=tuple(b.input_size) if b.input_size else None,
        mean=tuple(b.mean) if b.mean else None,
        std=tuple(b.std) if b.std else None,
        channels_last=config.trainer.channels_last_choice(),
    )
    if config.trainer.compile:
        backbone.model.compile()
    return backbone


def feature_autocast(config: TrainConfig) -> torch.dtype | None:
    """The autocast dtype of the feature pass: bfloat16/float16 under mixed precision."""
    precision = str(config.trainer.precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    return torch.float16 if precision.startswith("16") else None


def feature_device(config: TrainConfig) -> torch.device:
    """Where frozen features are extracted: the GPU when the trainer may use one."""
    use_gpu = config.trainer.accelerator in {"auto", "gpu", "cuda"} and torch.cuda.is_available()
    return torch.device("cuda" if use_gpu else "cpu")


def build_datamodule(config: TrainConfig, backbone: Backbone) -> LandmarkDataModule:
    data = config.data
    use_features = config.features.enabled(backbone.frozen)
    autocast = feature_autocast(config)
    source = build_source(config)
    store = FeatureStore(
        cache_dir(config) / "features", encoder_key(backbone, autocast), config.features.dtype
    )
    return LandmarkDataModule(
        source,
        backbone.preprocessing,
        index=catalog_index(config, source),
        split=data.split.to_spec(),
        split_file=data.split_file,
        min_images_per_landmark=data.min_images_per_landmark,
        augment=data.augment,
        noise_variance=data.noise_variance,
        random_views=config.features.random_views,
        auto_augment=data.auto_augment,
        random_erasing=data.random_erasing,
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        sampler=data.sampler,
        balance_power=data.balance_power,
        feature_encoder=backbone if use_features else None,
        feature_store=store if use_features else None,
        feature_autocast=autocast,
        feature_device=feature_device(config),
        feature_batch_size=config.features.batch_size,
        feature_memory=config.features.memory_mb << 20,
        loader_timeout=data.timeout_s,
        seed=config.seed,
    )


def build_strategy(config: TrainConfig, backbone: Backbone, hierarchy: Any) -> TwoLevelStrategy:
    """The registered strategy ``strategy.name`` with its options and the head config."""
    cls = registered(config.strategy.name).module
    head = {"hidden": config.head.hidden, "dropout": config.head.dropout}
    try:
        module = cls(
            backbone,
            hierarchy,
            config.strategy.stage_configs(),
            **strategy_kwargs(config.strategy, head),
        )
    except ValueError as error:  # the strategy's own argument names, as config keys
        raise as_config_error(error, config.strategy) from error
    module.recipe = config.optim
    return module


def training_class_weights(datamodule: LandmarkDataModule) -> dict[str, torch.Tensor]:
    """Per task, balanced loss weights from the training split's class counts."""
    catalog = datamodule.catalog
    categories, landmarks = catalog.labels()
    train = [a == "train" for a in datamodule.assignment]
    return {
        task: balanced_class_weights(
            [label for label, keep in zip(labels, train, strict=True) if keep], count
        )
        for task, labels, count in (
            ("category", categories, catalog.hierarchy.num_categories),
            ("landmark", landmarks, catalog.hierarchy.num_landmarks),
        )
    }


def prepare_data(config: TrainConfig) -> tuple[Backbone, LandmarkDataModule]:
    """Seeded backbone and a set-up data module (features computed or read from the cache)."""
    validate_config(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    backbone = build_backbone(config)
    datamodule = build_datamodule(config, backbone)
    datamodule.setup("fit")
    return backbone, datamodule
