"""landmark_tl: two-level image classification (category / landmark) by transfer learning.

From Python (a notebook)::

    import landmark_tl
    config = landmark_tl.compose(["experiment=study_table1", "strategy=hierarchical"])
    metrics = landmark_tl.train(config, "runs/hierarchical")
    run = landmark_tl.load_run("runs/hierarchical")
    run.predict(images)

``compose`` uses the same config groups and presets as the command line ``landmark-tl
train``; the other subcommands are ``report``, ``predict``, ``evaluate``, ``export``,
``doctor`` and ``shards`` (also as ``python -m landmark_tl.<command>``).
"""

from __future__ import annotations

from typing import Any

from landmark_tl.config import compose
from landmark_tl.inference import load_run

__version__ = "0.1.0"
__all__ = ["compose", "load_run", "train"]


def __getattr__(name: str) -> Any:
    """``landmark_tl.train``: imported on first use (the module is callable as ``train``)."""
    if name == "train":
        import landmark_tl.train

        return landmark_tl.train
    raise AttributeError(f"module 'landmark_tl' has no attribute {name!r}")
