"""Structured configuration: the schema that Hydra's YAML files fill in.

Typos in keys and values of the wrong type or outside an enum fail when the config is
composed, naming the key. Every module takes plain arguments; these dataclasses only carry
them from the command line to the builders in :mod:`landmark_tl.training.run`.

Every default has one home. A key that each option of its config group sets
(``backbone.name``, ``head.dropout``, ``features.cache`` ...) has none here (``MISSING``):
the YAML of the group's options is its home, and :func:`compose` (or a saved
``config.yaml``) fills it in, so ``TrainConfig()`` alone is refused. The other keys have
their one default here, and the default options' YAML does not restate them
(tests/config/test_schema.py checks both). The strategy and optim groups are the
exceptions: their dataclasses are also the library's argument objects (``StageConfig``,
``Recipe``), whose neutral defaults (no label smoothing, no epochs given) the options' YAML
chooses over. The ``data`` group is typed, like ``strategy``, by the config dataclass the
source named by ``data.source`` registered (:mod:`landmark_tl.data.sources.registry`): the
shared keys in :class:`~landmark_tl.data.config.DataConfig`, the source's own in its
subclass (``data.source`` is that class's default), so ``data=<source>`` knows its keys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import landmark_tl.conf
from landmark_tl.config.lightning import check_lightning_surface
from landmark_tl.core.errors import ConfigError, UsageError
from landmark_tl.data.config import DataConfig
from landmark_tl.data.features.store import DTYPES as FEATURE_DTYPES
from landmark_tl.data.sources import registered_source
from landmark_tl.models.backbone import FreezePolicy, WeightsSource
from landmark_tl.models.optim import Recipe, SchedulerName
from landmark_tl.models.strategies import StrategyConfig, registered
from landmark_tl.models.strategies.stages import STAGE_NAMES


@dataclass
class BackboneConfig:
    name: str = MISSING  # timm model name; conf/backbone/<option>.yaml
    weights: WeightsSource = MISSING
    weights_file: str | None = None
    freeze: FreezePolicy = MISSING  # all | none | schedule
    unfreeze_at_epoch: int = 5  # schedule: epochs with the backbone frozen
    unfreeze_last_blocks: int | None = None  # schedule: unfreeze the last K units; null: all
    lr_ratio: float = 0.1  # none, schedule: backbone learning rate / heads' learning rate
    freeze_bn: bool = False  # none, schedule: keep batch-norm statistics fixed
    drop_path_rate: float | None = None  # stochastic depth when fine-tuning; null: timm's
    input_size: list[int] | None = None  # override timm's (C, H, W)
    mean: list[float] | None = None  # override timm's normalisation
    std: list[float] | None = None


@dataclass
class HeadConfig:
    hidden: list[int] = MISSING  # widths of the shared hidden layers; conf/head/<option>.yaml
    dropout: float = MISSING  # in [0, 1)


# The Hydra config tree ships inside the package, so a plain (non-editable) install trains;
# Hydra finds it as CONFIG_MODULE (pkg://landmark_tl.conf) wherever the package is installed.
CONFIG_DIR = Path(landmark_tl.conf.__file__).resolve().parent
CONFIG_MODULE = landmark_tl.conf.__name__


def auto_choice(key: str, value: Any) -> bool | None:
    """An ``auto|true|false`` setting: True / False, or None for auto."""
    text = str(value).lower()
    if text not in {"auto", "true", "false"}:
        raise ConfigError(f"{key}={value}: use auto, true or false")
    return None if text == "auto" else text == "true"


def default_logger() -> dict[str, Any]:
    """``logger`` when none is chosen: the CSV log of ``conf/logger/csv.yaml``."""
    return _group_option("logger", "csv")


def _group_option(group: str, option: str) -> dict[str, Any]:
    """The content of ``conf/<group>/<option>.yaml``: a default whose one home is its YAML."""
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml"))


@dataclass
class FeaturesConfig:
    """Frozen-backbone features computed once per image and view, cached on disk."""

    # values: conf/features/default.yaml
    cache: str = MISSING  # auto: on when the backbone is frozen; true; false
    batch_size: int | None = MISSING  # of the feature pass; null: by device and image size
    random_views: int = MISSING  # data.augment=random with cached features: views per image
    dtype: str = MISSING  # how rows are stored: float32, or float16 (half the disk/memory)
    memory_mb: int = MISSING  # features of a split up to this size are read into memory

    def enabled(self, backbone_frozen: bool) -> bool:
        choice = auto_choice("features.cache", self.cache)
        if choice and not backbone_frozen:
            raise ConfigError("features.cache=true needs a frozen backbone (backbone.freeze=all)")
        return backbone_frozen if choice is None else choice


@dataclass
class TrainerConfig:
    accelerator: str = MISSING  # conf/trainer/<option>.yaml
    devices: Any = MISSING
    strategy: str = "auto"  # e.g. ddp for data-parallel training on several devices
    num_nodes: int = 1
    precision: str = MISSING  # e.g. bf16-mixed on a GPU
    # NHWC memory format for the backbone: auto = when it is frozen for good (inference
    # only: measured 1.0-1.8x faster on CPU across timm convnets, never slower), else off
    # (training: faster for some convnets, slower for others); true/false force it
    channels_last: Any = "auto"
    compile: bool = False  # torch.compile the backbone
    deterministic: bool = True
    log_every_n_steps: int = 1
    enable_progress_bar: bool | None = None  # None: when the terminal is interactive
    # any other argument of lightning.Trainer (gradient_clip_val, limit_train_batches,
    # fast_dev_run, profiler ...), given as trainer.<key>: checked against its signature
    extra: dict[str, Any] = field(default_factory=dict)

    def channels_last_choice(self) -> bool | None:
        """``channels_last`` as :func:`~landmark_tl.models.backbone.create_backbone` takes
        it: True / False, or None for auto."""
        return auto_choice("trainer.channels_last", self.channels_last)


@dataclass
class PathsConfig:
    output_dir: str = MISSING  # conf/paths/default.yaml
    cache_dir: str = MISSING


@dataclass
class ExtrasConfig:
    """Conveniences of the command line and per-run outputs that never change a result."""

    # library notices (Lightning's lines, Python warnings) go to <run dir>/train.log;
    # false (or --verbose on the command line) leaves them on the console
    quiet: bool = True
    # curves and confusion PNGs in <run>/plots; false in sweeps keeps them off the hot
    # path (landmark-tl report runs=DIR run_plots=true draws them later)
    plots: bool = True


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    optim: Recipe = field(default_factory=Recipe)  # optimiser and schedule of every stage
    # Lightning loggers and extra callbacks by name, each built from its _target_
    # (conf/logger, conf/callbacks); a logger's run_args (the run dir, stage and tracking
    # run) are filled in. The CSV log is always there (plots and reports read it): the
    # default is conf/logger/csv.yaml; ~logger.csv removes it.
    logger: dict[str, Any] = field(default_factory=default_logger)
    callbacks: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # continue the run in hydra.run.dir (or each job of hydra.sweep.dir): finished runs and
    # stages are kept, an interrupted stage goes on from its last checkpoint
    resume: bool = False
    # metrics.json value a run returns to sweepers (Optuna), as a dotted path
    optimized_metric: str = "val.landmark.macro_f1"
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)

    def __post_init__(self) -> None:
        missing = _missing_keys(self)
        if missing:
            raise ConfigError(
                f"TrainConfig: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} "
                "not given: the YAML tree is the only home of defaults, so build the config "
                "with landmark_tl.compose([overrides]) (the command line's defaults)"
            )


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of a dataclass tree still ``MISSING`` (a plain walk: OmegaConf's would
    build the whole schema, and every job of a multirun is typed)."""
    if node == MISSING:
        return [prefix.rstrip(".")]
    if is_dataclass(node):
        items = ((f.name, getattr(node, f.name)) for f in fields(node))
    elif isinstance(node, dict):
        items = ((str(k), v) for k, v in node.items())
    else:
        return []
    return [key for name, value in items for key in _missing_keys(value, f"{prefix}{name}.")]


@dataclass
class _ComposedConfig(TrainConfig):
    """The schema Hydra composes: as TrainConfig, but ``trainer`` is open, so that
    ``+trainer.gradient_clip_val=1`` and YAML files (conf/debug) can name any Trainer
    argument; :func:`to_train_config` types it again."""

    trainer: dict[str, Any] = field(default_factory=lambda: asdict(TrainerConfig()))


def register_configs() -> None:
    """Register the schema under the name ``train_schema`` for ``conf/train.yaml``."""
    ConfigStore.instance().store(name="train_schema", node=_ComposedConfig)


def compose_dict(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``config_name`` of the package's tree with ``key=value`` overrides, as the
    command line composes it (unresolved). An override that does not compose (unknown key or
    group option, wrong type, bad syntax) is a :class:`UsageError` with Hydra's message."""
    register_configs()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        cause = f"\n{error.__cause__}" if error.__cause__ else ""
        raise UsageError(f"{error}{cause}") from error


def compose(overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of ``overrides`` (e.g. ``["experiment=study_table1",
    "strategy=hierarchical", "trainer=cpu"]``): the same groups, presets and defaults as
    ``landmark-tl train``, as a :class:`TrainConfig` for :func:`landmark_tl.train`."""
    return to_train_config(compose_dict("train", overrides))


def to_train_config(cfg: DictConfig | dict[str, Any]) -> TrainConfig:
    """A composed or saved config as a :class:`TrainConfig`; ``trainer`` keys that are not
    TrainerConfig fields move to ``trainer.extra`` (checked against Lightning's Trainer
    when the run starts)."""
    plain = OmegaConf.create(
        OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    )
    trainer = plain.get("trainer")
    if trainer is not None:
        known = {f.name for f in fields(TrainerConfig)}
        extra = {key: trainer[key] for key in list(trainer) if key not in known}
        for key in extra:
            del trainer[key]
        trainer["extra"] = {**(trainer.get("extra") or {}), **extra}
    schema = _schema(TrainConfig)
    data = plain.get("data")
    if data is not None:  # typed by the registered source's config dataclass
        known = {f.name for f in fields(registered_source(data.get("source", "???")).config)}
        for key in [k for k in data if k not in known and k in _FLAT_SOURCE_KEYS]:
            del data[key]  # another source's key (older config.yaml, or data.source=...)
        schema.data = _schema(registered_source(data.source).config)
    strategy = plain.get("strategy")
    if strategy is not None:  # typed by the registered strategy's config dataclass
        known = {f.name for f in fields(registered(strategy.get("name", "multi_output")).config)}
        for key in [k for k in strategy if k not in known and strategy[k] is None]:
            del strategy[key]  # an option another strategy takes, unset (older config.yaml)
        schema.strategy = _schema(registered(strategy.name).config)
    for key in ("logger", "callbacks"):  # named objects: what was composed replaces the default
        if key in plain:
            schema[key] = {}
    return OmegaConf.to_object(OmegaConf.merge(schema, plain))


# The keys of every source in the one flat DataConfig of earlier versions, which each
# config.yaml they wrote holds whatever its source (and which data.source=<other> leaves).
_FLAT_SOURCE_KEYS = frozenset(
    {
        "manifest",
        "hierarchy",
        "columns",
        "clean",
        "images_per_landmark",
        "image_size",
        "synthetic_seed",
    }
)


def _schema(cls: type) -> DictConfig:
    """A fresh ``OmegaConf.structured(cls)``: a copy of the one built first (building it
    walks the dataclasses, about 0.05 s for TrainConfig; a multirun types every job)."""
    return copy.deepcopy(_built_schema(cls))


@cache
def _built_schema(cls: type) -> DictConfig:
    return OmegaConf.structured(cls)


# Stage k of a run is seeded with seed + k; numpy and Lightning take seeds below 2**32.
MAX_SEED = 2**32 - len(STAGE_NAMES)


FINITE = "a finite number >= 0"


def _rate(value: float) -> bool:
    """A learning rate or decay that can work: finite (``inf`` and ``nan`` compare oddly:
    ``inf >= 0`` holds, and a run with it trains on NaN losses) and not negative."""
    return math.isfinite(value) and value >= 0


def _range_problems(config: TrainConfig) -> list[str]:
    """Values of the right type but outside what can work, as 'key=value: why' lines."""
    checks: list[tuple[str, Any, bool, str]] = [
        ("data.batch_size", config.data.batch_size, config.data.batch_size >= 1, ">= 1"),
        (
            "data.num_workers",
            config.data.num_workers,
            config.data.num_workers is None or config.data.num_workers >= 0,
            ">= 0 (or null: one per CPU)",
        ),
        (
            "data.min_images_per_landmark",
            config.data.min_images_per_landmark,
            config.data.min_images_per_landmark >= 1,
            ">= 1",
        ),
        (
            "data.balance_power",
            config.data.balance_power,
            config.data.balance_power >= 0,
            ">= 0 (1: balanced, 0: as shuffling)",
        ),
        (
            "data.noise_variance",
            config.data.noise_variance,
            config.data.noise_variance >= 0,
            ">= 0",
        ),
        ("head.dropout", config.head.dropout, 0 <= config.head.dropout < 1, "in [0, 1)"),
        (
            "features.batch_size",
            config.features.batch_size,
            config.features.batch_size is None or config.features.batch_size >= 1,
            ">= 1",
        ),
        (
            "features.memory_mb",
            config.features.memory_mb,
            config.features.memory_mb >= 0,
            ">= 0 (0: always read from the mapped shards)",
        ),
        (
            "features.dtype",
            config.features.dtype,
            config.features.dtype in FEATURE_DTYPES,
            f"one of {list(FEATURE_DTYPES)}",
        ),
        (
            "data.max_pixels",
            config.data.max_pixels,
            config.data.max_pixels is None or config.data.max_pixels >= 1,
            ">= 1 (or null: no limit)",
        ),
        ("data.timeout_s", config.data.timeout_s, config.data.timeout_s >= 0, ">= 0 (0: none)"),
        (
            "features.random_views",
            config.features.random_views,
            config.features.random_views >= 0,
            ">= 0",
        ),
        ("trainer.num_nodes", config.trainer.num_nodes, config.trainer.num_nodes >= 1, ">= 1"),
        (
            "backbone.lr_ratio",
            config.backbone.lr_ratio,
            math.isfinite(config.backbone.lr_ratio) and config.backbone.lr_ratio > 0,
            "finite and > 0",
        ),
    ]
    if config.backbone.input_size is not None:
        size = list(config.backbone.input_size)
        checks.append(
            (
                "backbone.input_size",
                size,
                len(size) == 3 and size[0] == 3 and min(size[1:]) >= 32,
                "[3, height, width] with height and width >= 32 (or null: the model's own)",
            )
        )
    checks.append(
        (
            "seed",
            config.seed,
            0 <= config.seed <= MAX_SEED,
            f"in [0, {MAX_SEED}] (stage k is seeded with seed + k)",
        )
    )
    checks += [(f"head.hidden[{i}]", h, h >= 1, ">= 1") for i, h in enumerate(config.head.hidden)]
    if config.strategy.lr is not None:
        checks.append(("strategy.lr", config.strategy.lr, _rate(config.strategy.lr), FINITE))
    for name, stage in config.strategy.stages.items():
        key = f"strategy.stages.{name}"
        checks += [
            (f"{key}.epochs", stage.epochs, stage.epochs is None or stage.epochs >= 1, ">= 1"),
            (f"{key}.lr", stage.lr, stage.lr is None or _rate(stage.lr), FINITE),
            (f"{key}.weight_decay", stage.weight_decay, _rate(stage.weight_decay), FINITE),
        ]
        if stage.patience is not None:
            checks.append((f"{key}.patience", stage.patience, stage.patience >= 1, ">= 1"))
    problems = [f"{key}={value}: must be {rule}" for key, value, ok, rule in checks if not ok]
    return problems + config.data.problems()


def _conflicts(config: TrainConfig) -> list[str]:
    """Options that cannot take effect together with the rest of the config."""
    problems = []
    stage2 = getattr(config.strategy, "train_in_stage2", None) or []
    if "backbone" in stage2 and config.backbone.freeze is FreezePolicy.all:
        problems.append(
            f"strategy.train_in_stage2={list(stage2)} trains the backbone, but "
            "backbone.freeze=all keeps it frozen: set backbone.freeze=none (or schedule), "
            "or remove 'backbone'"
        )
    return problems + _finetuning_conflicts(config)


def _finetuning_conflicts(config: TrainConfig) -> list[str]:
    """Fine-tuning keys that the backbone's freeze policy or the strategy ignore."""
    b, problems = config.backbone, []
    freeze = f"backbone.freeze={b.freeze.value}"
    if config.optim.layer_decay is not None and b.freeze is FreezePolicy.all:
        problems.append(
            f"optim.layer_decay={config.optim.layer_decay} scales the learning rates of a "
            f"training backbone, but {freeze} trains none of it (its features may be cached): "
            "set backbone.freeze=none (or schedule), or optim.layer_decay=null"
        )
    if b.unfreeze_last_blocks is not None and b.freeze is not FreezePolicy.schedule:
        problems.append(
            f"backbone.unfreeze_last_blocks={b.unfreeze_last_blocks} is the part that "
            f"backbone.freeze=schedule unfreezes, but {freeze}: set backbone.freeze=schedule, "
            "or backbone.unfreeze_last_blocks=null"
        )
    if b.freeze_bn and b.freeze is FreezePolicy.all:
        problems.append(
            f"backbone.freeze_bn=true keeps the batch-norm statistics of a training backbone, "
            f"but {freeze} is frozen already: set backbone.freeze=none (or schedule), or "
            "backbone.freeze_bn=false"
        )
    epochs = [s.epochs for s in config.strategy.stages.values() if s.epochs is not None]
    if b.freeze is FreezePolicy.schedule and epochs and b.unfreeze_at_epoch >= max(epochs):
        problems.append(
            f"backbone.unfreeze_at_epoch={b.unfreeze_at_epoch}: no stage lasts longer "
            f"(strategy.stages.*.epochs at most {max(epochs)}), so the backbone would never "
            "unfreeze: lower it, or use backbone.freeze=all"
        )
    if b.freeze is FreezePolicy.schedule and config.optim.scheduler is SchedulerName.plateau:
        problems.append(
            "optim.scheduler=plateau keeps one rate per optimiser group it started with, but "
            "backbone.freeze=schedule adds the backbone's groups later: use optim.scheduler="
            "cosine (or step, none), or backbone.freeze=none"
        )
    name = config.strategy.name
    if b.freeze is not FreezePolicy.all and not registered(name).module.trains_backbone:
        problems.append(
            f"strategy={name} fits on frozen features, but {freeze} asks to fine-tune the "
            "backbone: set backbone.freeze=all, or choose a strategy that trains it "
            "(e.g. +approach=finetune)"
        )
    return problems


def validate_config(config: TrainConfig) -> None:
    """Refuse, at start, values that would fail later or train nonsense."""
    problems = _range_problems(config) + _conflicts(config)
    if registered_source(config.data.source).source.needs_root and not config.data.root:
        problems.append(
            f"data.root is empty: data={config.data.source} needs data.root=/path/to/data"
        )
    frozen = config.backbone.freeze is FreezePolicy.all
    if config.optim.mixes and config.features.enabled(frozen):
        problems.append(
            "optim.mixup/optim.cutmix mix images, but this run trains on cached features of a "
            "frozen backbone: set features.cache=false (or backbone.freeze=none), or turn "
            "mixing off"
        )
    problems += config.optim.problems(
        {n: stage.epochs for n, stage in config.strategy.stages.items() if stage.epochs is not None}
    )
    for check in (lambda: config.features.enabled(frozen), config.trainer.channels_last_choice):
        try:
            check()
        except ConfigError as err:
            problems.append(str(err))
    try:
        check_lightning_surface(
            config.trainer, config.callbacks, config.strategy.monitor, config.strategy.monitor_mode
        )
    except ValueError as err:
        problems.append(str(err))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
