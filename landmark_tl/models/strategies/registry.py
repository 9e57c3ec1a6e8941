"""The strategy registry, as timm registers models: a strategy is one module whose
LightningModule registers itself by name with its config dataclass, plus one YAML.

    @dataclass
    class ToyConfig(StrategyConfig):
        name: str = "toy"
        temperature: float = 1.0  # an option: a keyword argument of the strategy

    @register_strategy(ToyConfig)
    class Toy(TwoLevelStrategy): ...

Registering stores the config dataclass in Hydra's ConfigStore as ``strategy/toy_schema``,
which the strategy's YAML ``conf/strategy/toy.yaml`` lists first in its defaults (the YAML
sets the stages and documents the options); without such a YAML it is also stored as
``strategy/toy``. Either way ``strategy=toy`` composes with typed options, and
:func:`landmark_tl.training.build.build_strategy` builds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar

from hydra.core.config_store import ConfigStore

import landmark_tl.conf
from landmark_tl.core.errors import ConfigError
from landmark_tl.models.strategies.stages import STAGE_NAMES, StageConfig

if TYPE_CHECKING:
    from landmark_tl.models.strategies.base import TwoLevelStrategy

S = TypeVar("S", bound="type[TwoLevelStrategy]")


@dataclass
class StrategyConfig:
    """What every strategy takes: its stages (from its YAML) and how each stage is judged.
    A strategy's config dataclass subclasses this; its own fields are its options."""

    name: str = "multi_output"
    # every stage name a strategy may run, so that any can be overridden; the numbers of
    # the stages a strategy runs come from its YAML
    stages: dict[str, StageConfig] = field(
        default_factory=lambda: {name: StageConfig() for name in STAGE_NAMES}
    )
    lr: float | None = None  # when set, the learning rate of every stage (for sweeps)
    # what each stage keeps (best checkpoint) and stops on (early stopping): val/loss or a
    # validation score every stage logs (val/macro_f1, val/accuracy: mean over the stage's
    # tasks; val/landmark_f1 ... where every stage trains that task)
    monitor: str = "val/loss"
    monitor_mode: str = "auto"  # auto: min for a loss, max for a score; or min | max
    # the approach's name in metrics.json and reports (e.g. finetune for a fine-tuned
    # multi_output); null: the strategy's name (and first task)
    label: str | None = None

    def stage_configs(self) -> dict[str, StageConfig]:
        """The stages, with ``lr`` applied to each when it is set."""
        if self.lr is None:
            return dict(self.stages)
        return {name: replace(stage, lr=self.lr) for name, stage in self.stages.items()}

    def options(self) -> dict[str, Any]:
        """The strategy's own options (the fields beyond StrategyConfig's) as plain values."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in COMMON}

    @property
    def approach(self) -> str:
        """A readable name of the approach, e.g. ``head_swap (landmark first)``."""
        if self.label:
            return self.label
        first = getattr(self, "first", None)
        return f"{self.name} ({first} first)" if first else self.name


COMMON = frozenset(f.name for f in fields(StrategyConfig))


@dataclass(frozen=True)
class Registered:
    module: type[TwoLevelStrategy]
    config: type[StrategyConfig]


_REGISTRY: dict[str, Registered] = {}
STRATEGIES: dict[str, type[TwoLevelStrategy]] = {}
"""Every registered strategy class by name (kept by :func:`register_strategy`)."""


def register_strategy(config: type[StrategyConfig]) -> Callable[[S], S]:
    """Class decorator: register the strategy under ``config``'s default ``name``."""
    name = StrategyConfig.name if config is StrategyConfig else config().name
    if not (is_dataclass(config) and issubclass(config, StrategyConfig)):
        raise TypeError(f"{config!r}: a strategy's config is a dataclass of StrategyConfig")

    def decorate(cls: S) -> S:
        known = _REGISTRY.get(name)
        if known is not None and known.module.__qualname__ != cls.__qualname__:
            raise ValueError(f"strategy {name!r} is already registered by {known.module}")
        _REGISTRY[name] = Registered(cls, config)
        STRATEGIES[name] = cls
        store = ConfigStore.instance()
        store.store(group="strategy", name=f"{name}_schema", node=config)
        if not (files(landmark_tl.conf) / "strategy" / f"{name}.yaml").is_file():
            store.store(group="strategy", name=name, node=config)  # strategy=<name>, no YAML
        return cls

    return decorate


def registered(name: str) -> Registered:
    """The strategy registered as ``name``; a ConfigError lists the registered ones."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"strategy={name}: no such strategy; registered: {sorted(_REGISTRY)} (a new one "
            "registers itself with @register_strategy when its module is imported)"
        )
    return _REGISTRY[name]


def _plain(value: Any) -> Any:
    """Dataclass values as dicts (e.g. loss weights), others as they are."""
    return asdict(value) if is_dataclass(value) else value


def as_config_error(error: ValueError, config: StrategyConfig) -> ConfigError:
    """A strategy's ValueError, which names its own arguments (``first=...``, ``stages``),
    with them as config keys (``strategy.first=...``, ``strategy.stages``)."""
    names = "|".join(sorted({f.name for f in fields(config)}, key=len, reverse=True))
    message = re.sub(rf"(?<![\w.])({names})\b(?=[=:])", r"strategy.\1", str(error))
    return ConfigError(f"strategy={config.name}: {message}")


def strategy_kwargs(config: StrategyConfig, head: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the strategy ``config`` names: its options, and ``head`` (hidden
    widths, dropout) when it takes them."""
    module = registered(config.name).module
    return {**(dict(head) if module.takes_head else {}), **config.options()}
