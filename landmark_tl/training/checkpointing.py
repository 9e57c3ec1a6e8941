"""How a strategy's checkpoints are written and read (Lightning's checkpoint IO and
callback state, not the LightningModule's business).

- A frozen backbone's weights are the pretrained ones: checkpoints leave them out and
  record which backbone it was (name, weights digest); reading puts the given backbone's
  weights back after checking it is that one (:class:`FrozenBackboneIO`,
  :func:`restore_frozen_backbone` for reads outside a Trainer).
- The random streams go into every checkpoint and come back when a fit resumes, so a
  resumed stage continues as the uninterrupted one would (:class:`RandomStreams`).
"""

from __future__ import annotations

import random
from typing import Any
from weakref import WeakKeyDictionary

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from landmark_tl.models.backbone import Backbone

PREFIX = "backbone."  # the backbone's keys in a strategy's state dict
_FROZEN_DIGESTS: WeakKeyDictionary[Backbone, str] = WeakKeyDictionary()


def frozen_digest(backbone: Backbone) -> str:
    """The backbone's weights digest; computed once while it stays frozen."""
    if not backbone.frozen:
        return backbone.weights_digest
    if backbone not in _FROZEN_DIGESTS:
        _FROZEN_DIGESTS[backbone] = backbone.weights_digest
    return _FROZEN_DIGESTS[backbone]


def strip_frozen_backbone(checkpoint: dict[str, Any], backbone: Backbone) -> dict[str, Any]:
    """``checkpoint`` without a frozen backbone's weights, naming the backbone instead."""
    if not backbone.frozen:
        return checkpoint
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(PREFIX)}
    record = {"name": backbone.name, "weights_digest": frozen_digest(backbone)}
    return {**checkpoint, "state_dict": state, "frozen_backbone": record}


def restore_frozen_backbone(checkpoint: dict[str, Any], backbone: Backbone) -> dict[str, Any]:
    """Put ``backbone``'s weights into a checkpoint saved without them; a ValueError when
    it is not the backbone the checkpoint was trained on."""
    saved = checkpoint.get("frozen_backbone")
    if saved is None:
        return checkpoint
    if saved["weights_digest"] != frozen_digest(backbone):
        raise ValueError(
            f"checkpoint was trained on frozen backbone {saved['name']} with weights "
            f"{saved['weights_digest']}; this module's backbone {backbone.name} has "
            f"weights {backbone.weights_digest}: build it with the same backbone.*"
        )
    checkpoint["state_dict"].update({PREFIX + k: v for k, v in backbone.state_dict().items()})
    return checkpoint


class FrozenBackboneIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, leaving a frozen ``backbone`` out of the files."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        super().save_checkpoint(
            strip_frozen_backbone(checkpoint, self.backbone), path, storage_options
        )

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return restore_frozen_backbone(
            super().load_checkpoint(path, *args, **kwargs), self.backbone
        )


class RandomStreams(L.Callback):
    """Saves torch's, Python's (and CUDA's) random states with each checkpoint; Lightning
    restores them when a fit resumes from it."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        random.setstate(_as_tuple(state_dict["python"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _as_tuple(value: object) -> object:
    """Lists back to tuples, recursively (a random state saved as plain data)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
