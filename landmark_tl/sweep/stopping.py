"""Each member's checkpoint choice and early stopping in the heads launcher's loop."""

from __future__ import annotations

import math
from collections.abc import Sequence


class MemberStopping:
    """ModelCheckpoint and EarlyStopping of each member on the monitor (``mode`` min or
    max, strict improvement as Lightning's): the weights are kept when it improved (the
    first epoch always; every epoch without validation); a member stops after ``patience``
    epochs without improvement, on a non-finite score, or at its own last epoch."""

    def __init__(
        self, epochs: Sequence[int], patience: Sequence[int | None], mode: str = "min"
    ) -> None:
        self.epochs, self.patience = list(epochs), list(patience)
        self.sign = 1.0 if mode == "min" else -1.0  # compare sign * score, lower is better
        self.running = [True] * len(self.epochs)
        self.best = [math.inf] * len(self.epochs)
        self.waits = [0] * len(self.epochs)
        self.kept_any = [False] * len(self.epochs)

    def update(self, m: int, epoch: int, score: float | None) -> bool:
        """Record member ``m``'s epoch; whether its weights are the new best."""
        signed = None if score is None else self.sign * score
        better = signed is not None and signed < self.best[m]
        keep = score is None or not self.kept_any[m] or better
        self.kept_any[m] = True
        if signed is not None and self.patience[m] is not None:
            self.waits[m] = 0 if better else self.waits[m] + 1
            if self.waits[m] >= self.patience[m] or not math.isfinite(signed):
                self.running[m] = False
        if better:
            self.best[m] = signed
        if epoch + 1 >= self.epochs[m]:
            self.running[m] = False
        return keep
