"""Compose a multirun's job configs once per distinct set of config-group choices.

Hydra composes every job of a multirun from scratch (defaults list, YAML files, merges):
a quarter of a second per job on the busy 2-core machine (study_table1's 24 jobs: 6.6 s;
3.1 s here), and its sweepers compose each job twice (once to check the batch,
``Sweeper.validate_batch_is_legal``, once to launch it).
Jobs that differ only in plain values (``seed=1``, ``strategy.lr=0.01``) compose the same
config before their values are applied, so :func:`remember_sweep_configs` composes each
distinct set of the other overrides once, with Hydra's own ``load_sweep_config``, and gives
each job a copy with its values applied by Hydra's own override code. The result equals
Hydra's compose of the job (``tests/sweep/test_sweep_compose.py`` checks it); anything else
(deletions, packages, sweeps, a value override Hydra might read while composing) takes
Hydra's full compose.

This reaches into ``hydra._internal`` (the override parser's classification and
``ConfigLoaderImpl._apply_overrides_to_config``): Hydra has no public API for it, and the
equality test above fails if a Hydra upgrade changes what composing does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

Compose = Callable[[DictConfig, list[str]], DictConfig]


def remember_sweep_configs(config_loader: Any) -> None:
    """Make ``config_loader.load_sweep_config`` compose cheaply (see the module docstring)
    and keep each job's config until it is asked for again.

    The second request for the same master config and overrides (the launcher's, after
    the sweeper's check) gets the first result, once: a later request composes afresh,
    so nothing stale is served.
    """
    compose = config_loader.load_sweep_config
    if getattr(compose, "remembers", False):
        return
    cheap = CheapComposer(compose, config_loader.repository)
    kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if key in kept:
            return kept.pop(key)
        kept[key] = cheap(master_config, list(sweep_overrides))
        return copy.deepcopy(kept[key])  # the first asker may change its copy

    load_sweep_config.remembers = True  # type: ignore[attr-defined]
    config_loader.load_sweep_config = load_sweep_config


class CheapComposer:
    """``compose(master, overrides)`` with Hydra's full compose done once per distinct
    set of non-value overrides; each job's plain values applied to a copy."""

    def __init__(self, compose: Compose, repository: Any) -> None:
        self.compose = compose
        self.repository = repository
        self.parser = OverridesParser.create()
        self.bases: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def _is_value(self, override: Override) -> bool:
        """A plain ``key=value`` (or ``+key=value``) of the app's config: Hydra applies it
        after composing, and nothing it composes depends on it."""
        return (
            override.type in (OverrideType.CHANGE, OverrideType.ADD, OverrideType.FORCE_ADD)
            and override.package is None
            and not override.is_sweep_override()
            and not override.is_hydra_override()
            and not self.repository.group_exists(override.key_or_group)
        )

    def _is_group(self, override: Override) -> bool:
        return override.is_hydra_override() or self.repository.group_exists(override.key_or_group)

    def __call__(self, master: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(sweep_overrides)
        values = [o for o in parsed if self._is_value(o)]
        rest = [o for o in parsed if not self._is_value(o)]
        if not values or not all(self._is_group(o) for o in rest):
            return self.compose(master, sweep_overrides)
        key = (id(master), tuple(str(o.input_line) for o in rest))
        if key not in self.bases:
            self.bases[key] = self.compose(master, list(key[1]))
        config = copy.deepcopy(self.bases[key])
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        self._record(config, parsed)
        OmegaConf.copy_cache(from_config=master, to_config=config)
        return config

    def _record(self, config: DictConfig, parsed: Sequence[Override]) -> None:
        """What Hydra's compose records of the overrides: the task's, in order, and the
        run dir name made of them (the master's hydra overrides are already in place)."""
        task = [o for o in parsed if not o.is_hydra_override()]
        named = config.hydra.job.config.override_dirname
        with open_dict(config.hydra):
            config.hydra.overrides.task = [str(o.input_line) for o in task]
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task,
                kv_sep=named.kv_sep,
                item_sep=named.item_sep,
                exclude_keys=named.exclude_keys,
            )
