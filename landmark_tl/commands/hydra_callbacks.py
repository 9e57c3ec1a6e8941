"""Hydra callbacks: behaviour around whole multiruns."""

from __future__ import annotations

import logging
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class WarmFeatureCache(Callback):
    """Before a multirun's jobs start, fill the feature cache once for the base config.

    Jobs that share the backbone, weights, preprocessing and views (every point of a
    learning-rate / batch / dropout sweep, every seed and strategy) then only read it, even
    when a parallel launcher starts several at once. A bad base config fails here, before
    any job is launched.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from landmark_tl.config.schema import to_train_config
        from landmark_tl.training.build import prepare_data  # heavy imports only when needed

        base = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        with open_dict(base):
            del base["hydra"]
        train_config = to_train_config(base)
        if not train_config.features.enabled(train_config.backbone.freeze.value == "all"):
            return
        start = time.perf_counter()
        prepare_data(train_config)
        log.info("feature cache warm for the multirun in %.1f s", time.perf_counter() - start)
