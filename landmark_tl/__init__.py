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

import importlib
from typing import Any

from landmark_tl.core.version import __version__

__all__ = ["__version__", "compose", "load_run", "train"]
# Imported on first use, so that `import landmark_tl` (and `landmark-tl --help`) does not
# load torch: each name, and the module that defines it (`train` is the function; the
# `python -m landmark_tl.train` shim is no callable module).
_LAZY = {
    "compose": "landmark_tl.config.schema",
    "load_run": "landmark_tl.serving.inference",
    "train": "landmark_tl.training.run",
}


def __getattr__(name: str) -> Any:
    """``compose``, ``load_run`` and ``train``, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'landmark_tl' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
