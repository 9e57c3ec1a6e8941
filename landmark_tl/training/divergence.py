"""Fail a training stage whose loss or weights stop being finite (a diverged run).

Lightning has two near misses: ``EarlyStopping(check_finite=True)`` stops the fit but the
run then tests the NaN weights and writes metrics.json as a success, and
``Trainer(detect_anomaly=True)`` finds where a NaN arises at the cost of autograd's anomaly
mode on every step. :class:`StopOnDivergence` instead raises :class:`DivergedError`, so
the run ends with ``failed.json`` and exit code 1 (a multirun goes on to its next job).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from landmark_tl.core.errors import UserError


class DivergedError(UserError, RuntimeError):
    """A stage's training loss or weights became NaN or infinite; the message names the
    stage, the step and the learning-rate keys to lower."""


def divergence_hint(stage: str, lr: float | None) -> str:
    """What to change: the stage's learning-rate key with its value."""
    now = "" if lr is None else f"={lr:g}"
    return (
        f"lower strategy.stages.{stage}.lr{now} (or strategy.lr, which sets every stage's), "
        "or check the data"
    )


class StopOnDivergence(L.Callback):
    """Raise :class:`DivergedError` once the training loss or a trainable weight of
    ``stage`` is not finite.

    The loss of every step is folded into a flag on its device (no host sync per step);
    the flag is read, and agreed across data-parallel ranks, every
    ``trainer.log_every_n_steps`` steps and at the end of each epoch, when the trainable
    weights are checked too.
    """

    def __init__(self, stage: str, lr: float | None) -> None:
        self.stage = stage
        self.lr = lr
        self._finite: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):  # manual optimisation logs no loss here
            return
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._check(trainer, "the training loss", loss)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, "the training loss", None)
        trainable = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        if trainable:
            finite = torch.stack([torch.isfinite(p).all() for p in trainable]).all()
            self._finite = finite
            self._check(trainer, "a trainable weight", None)

    def _check(self, trainer: L.Trainer, what: str, loss: torch.Tensor | None) -> None:
        if self._finite is None:
            return
        ok = trainer.strategy.reduce_boolean_decision(bool(self._finite), all=True)
        self._finite = None
        if ok:
            return
        value = "" if loss is None else f" ({float(loss.detach().float().mean()):g})"
        raise DivergedError(
            f"stage {self.stage}: {what} became NaN or infinite{value} by epoch "
            f"{trainer.current_epoch}, step {trainer.global_step}: the run diverged; "
            + divergence_hint(self.stage, self.lr)
        )
