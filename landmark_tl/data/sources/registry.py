"""The data-source registry, as the strategy registry: a source is one module whose
:class:`ImageSource` registers itself by name with its config dataclass, plus one YAML.

    @dataclass
    class ToyConfig(DataConfig):
        source: str = "toy"
        pattern: str = "*.png"  # a key of its own: data.pattern

    @register_source(ToyConfig)
    class ToySource(ImageSource):
        @classmethod
        def from_config(cls, data: ToyConfig, cache_dir: Path) -> ToySource:
            return cls(data.required_root(), data.pattern)

Registering stores the config dataclass in Hydra's ConfigStore as ``data/toy_schema``,
which the source's YAML ``conf/data/toy.yaml`` lists first in its defaults (the YAML marks
``root: ???`` when the source needs one and documents the keys); without such a YAML it is
also stored as ``data/toy``. Either way ``data=toy`` composes with typed keys, and
:func:`build_source` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from importlib.resources import files
from pathlib import Path
from typing import TypeVar

from hydra.core.config_store import ConfigStore

import landmark_tl.conf
from landmark_tl.core.errors import ConfigError
from landmark_tl.data.config import DataConfig
from landmark_tl.data.sources.base import ImageSource

S = TypeVar("S", bound=type[ImageSource])


@dataclass(frozen=True)
class Registered:
    source: type[ImageSource]
    config: type[DataConfig]


_REGISTRY: dict[str, Registered] = {}
SOURCES: dict[str, type[ImageSource]] = {}
"""Every registered source class by name (kept by :func:`register_source`)."""


def register_source(config: type[DataConfig]) -> Callable[[S], S]:
    """Class decorator: register the source under ``config``'s default ``source``."""
    if not (is_dataclass(config) and issubclass(config, DataConfig)):
        raise TypeError(f"{config!r}: a source's config is a dataclass of DataConfig")
    name = config().source
    if not isinstance(name, str) or not name or name == DataConfig.source:
        raise TypeError(f"{config.__name__}: give its field source a default, the source's name")

    def decorate(cls: S) -> S:
        known = _REGISTRY.get(name)
        if known is not None and known.source.__qualname__ != cls.__qualname__:
            raise ValueError(f"data source {name!r} is already registered by {known.source}")
        _REGISTRY[name] = Registered(cls, config)
        SOURCES[name] = cls
        store = ConfigStore.instance()
        store.store(group="data", name=f"{name}_schema", node=config)
        if not (files(landmark_tl.conf) / "data" / f"{name}.yaml").is_file():
            store.store(group="data", name=name, node=config)  # data=<name>, no YAML
        return cls

    return decorate


def registered_source(name: str) -> Registered:
    """The source registered as ``name``; a ConfigError names data.source and the choices."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"data.source={name}: no such data source; registered: {sorted(_REGISTRY)} (a new "
            "one registers itself with @register_source when its module is imported)"
        )
    return _REGISTRY[name]


def build_source(data: DataConfig, cache_dir: Path) -> ImageSource:
    """The source ``data.source`` names, built from ``data`` (``cache_dir``: where a source
    keeps what it generates), with the shared ``data.max_pixels`` limit."""
    source = registered_source(data.source).source.from_config(data, cache_dir)
    source.max_pixels = data.max_pixels
    return source
