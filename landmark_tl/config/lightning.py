"""The open Lightning surface of a run: Trainer arguments, extra callbacks, the monitor.

Domain keys stay typed (:class:`~landmark_tl.config.schema.TrainerConfig`); any other
``trainer.<key>`` is passed to ``lightning.Trainer`` when its signature has it, and
callbacks are built from their ``_target_`` as in lightning-hydra-template. Everything is
checked when the run starts, naming the offending key.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate

from landmark_tl.core.errors import ConfigError

# Trainer arguments landmark_tl sets itself, and where to say them instead.
RESERVED = {
    "max_epochs": "strategy.stages.<stage>.epochs",
    "min_epochs": "strategy.stages.<stage>.epochs",
    "callbacks": "the callbacks group (callbacks=lr_monitor)",
    "logger": "the logger group (logger=[csv,mlflow])",
    "default_root_dir": "hydra.run.dir (the run dir)",
}


@dataclass(frozen=True)
class Monitor:
    """The validation value a stage keeps its best checkpoint by and stops early on."""

    key: str = "val/loss"
    mode: str = "min"

    @classmethod
    def resolve(cls, key: str, mode: str = "auto") -> Monitor:
        """``mode=auto``: min for a loss, max for a score."""
        if not key.startswith(("val/", "val_ema/")):
            raise ConfigError(
                f"strategy.monitor={key}: name a validation value, e.g. val/loss (or "
                "val_ema/loss for the averaged weights of callbacks=ema)"
            )
        if mode == "auto":
            mode = "min" if key.endswith("loss") else "max"
        if mode not in ("min", "max"):
            raise ConfigError(f"strategy.monitor_mode={mode}: use auto, min or max")
        return cls(key, mode)


VAL_LOSS = Monitor()


def trainer_arguments(trainer: Any, interactive: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``lightning.Trainer`` from a TrainerConfig (its typed keys that
    the Trainer takes, then its ``extra`` keys, checked)."""
    check_trainer_extra(trainer.extra)
    progress = trainer.enable_progress_bar
    return {
        "accelerator": trainer.accelerator,
        "devices": trainer.devices,
        "strategy": trainer.strategy,
        "num_nodes": trainer.num_nodes,
        "precision": trainer.precision,
        "deterministic": trainer.deterministic,
        "log_every_n_steps": trainer.log_every_n_steps,
        "enable_progress_bar": interactive if progress is None else progress,
        **trainer.extra,
    }


def check_trainer_extra(extra: Mapping[str, Any]) -> None:
    """Refuse keys that ``lightning.Trainer`` does not take or landmark_tl sets itself."""
    accepted = set(inspect.signature(L.Trainer).parameters)
    for key in extra:
        if key in RESERVED:
            raise ConfigError(f"trainer.{key} is set by landmark_tl: use {RESERVED[key]}")
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean trainer.{close[0]}?" if close else ""
            raise ConfigError(
                f"trainer.{key}: not a landmark_tl trainer key nor an argument of "
                f"lightning.Trainer{hint}"
            )


def resolve_target(group: str, name: str, spec: Mapping[str, Any]) -> type:
    """The class named by ``<group>.<name>._target_``; refuses one that does not import."""
    target = spec.get("_target_") if isinstance(spec, Mapping) else None
    if not target:
        raise ConfigError(f"{group}.{name} has no _target_: give the class to build")
    try:
        return get_class(target)
    except Exception as err:
        cause = err.__cause__ or err
        raise ConfigError(
            f"{group}.{name}._target_={target} cannot be imported "
            f"({type(cause).__name__}: {cause}); check the name or install its package"
        ) from err


def build_callbacks(specs: Mapping[str, Mapping[str, Any]]) -> list[L.Callback]:
    """One fresh callback per ``callbacks.<name>`` entry (a stage's Trainer owns them)."""
    built = []
    for name, spec in specs.items():
        if spec is None:  # removed from the command line: ~callbacks.<name> or <name>=null
            continue
        cls = resolve_target("callbacks", name, spec)
        if not issubclass(cls, L.Callback):
            raise ConfigError(f"callbacks.{name}._target_={spec['_target_']} is not a Callback")
        try:
            built.append(instantiate(spec))
        except Exception as err:
            cause = err.__cause__ or err
            raise ConfigError(f"callbacks.{name}: {type(cause).__name__}: {cause}") from err
    return built


def check_accelerator(accelerator: str) -> None:
    """Refuse an accelerator this machine lacks (Lightning would raise its
    MisconfigurationException only when the first stage's Trainer is built)."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

    available = {
        "gpu": CUDAAccelerator.is_available() or MPSAccelerator.is_available(),
        "cuda": CUDAAccelerator.is_available(),
        "mps": MPSAccelerator.is_available(),
        "tpu": XLAAccelerator.is_available(),
    }
    name = str(accelerator)
    if not available.get(name, True):
        raise ConfigError(
            f"trainer.accelerator={name}: torch sees no {name.upper()} on this machine; use "
            "trainer=auto (a GPU when there is one, else the CPU) or trainer=cpu"
        )


def check_lightning_surface(
    trainer: Any, callbacks: Mapping[str, Any], monitor: str, monitor_mode: str
) -> None:
    """Everything of this module a run uses, checked before any work starts."""
    check_accelerator(trainer.accelerator)
    check_trainer_extra(trainer.extra)
    build_callbacks(callbacks)
    Monitor.resolve(monitor, monitor_mode)
