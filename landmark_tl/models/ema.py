"""An exponential moving average of the weights, evaluated alongside the raw weights.

Validation and test score both: the raw weights as ``val/*`` and ``test/*``, the average as
``val_ema/*`` and ``test_ema/*`` (metrics.json: ``val_ema``, ``test_ema``). The raw
weights stay the model: the checkpoint's ``state_dict``, the next stage and predictions
use them; the average of each checkpoint is saved in its callback state, so the
``test_ema`` scores are those of the average saved with the kept (best) checkpoint, and a
resumed stage continues the average exactly. ``strategy.monitor=val_ema/...`` keeps the
checkpoint whose average validates best.

Written here rather than with timm's ``ModelEmaV3`` or Lightning's ``EMAWeightAveraging``:
both keep a whole second copy of the module (a frozen backbone included) and evaluate
*instead of* the raw weights; this averages only what trains in the stage and evaluates
the average through ``torch.func.functional_call`` on the same module.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class WeightEMA(L.Callback):
    """After every optimiser step, ``average ← decay · average + (1 − decay) · weights`` for
    the parameters and floating buffers that train in the stage (none for the probes,
    which are fitted, not stepped: then nothing is averaged or evaluated)."""

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"callbacks.ema.decay={decay}: must be in [0, 1]")
        self.decay = decay
        self.average: dict[str, torch.Tensor] = {}
        self.steps = 0  # optimiser steps averaged

    @property
    def state_key(self) -> str:
        return self._generate_state_key(decay=self.decay)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.average:  # a resumed stage restored its average already
            self.average = {k: v.detach().clone() for k, v in averaged(pl_module).items()}
            self.steps = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step == self.steps:  # no optimiser step (gradient accumulation)
            return
        self.steps = trainer.global_step
        weights = averaged(pl_module)
        for name, value in self._on(pl_module).items():
            value.lerp_(weights[name].detach(), 1.0 - self.decay)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self.average:
            pl_module.evaluate_with(self._on(pl_module), batch, "val_ema")

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self.average:
            pl_module.evaluate_with(self._on(pl_module), batch, "test_ema")

    def _on(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        """The average on the module's device (a restored one arrives on the CPU)."""
        device = pl_module.device
        if any(v.device != device for v in self.average.values()):
            self.average = {k: v.to(device) for k, v in self.average.items()}
        return self.average

    def state_dict(self) -> dict[str, Any]:
        return {"average": dict(self.average), "steps": self.steps, "decay": self.decay}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.average = dict(state_dict["average"])
        self.steps = int(state_dict["steps"])


def averaged(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
    """What an average of ``pl_module``'s weights covers in its current stage (by name)."""
    return pl_module.averaged_weights(pl_module.stage)
