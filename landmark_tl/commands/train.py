"""``landmark-tl train``: the command line of :mod:`landmark_tl.training.run`."""

from __future__ import annotations

import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from landmark_tl.commands.cli import hydra_app
from landmark_tl.config.schema import to_train_config
from landmark_tl.training.jobs import claimed_run_dir, one_job
from landmark_tl.training.run import is_rank_zero, metric_at, summary, train


@hydra_app("train")
@one_job
def main(cfg: DictConfig) -> float:
    """``landmark-tl train [key=value ...]`` (or ``python -m landmark_tl.train``); returns
    ``optimized_metric`` to sweepers. Data, config and run-dir errors print their message
    alone and exit 1 (``--debug`` or ``HYDRA_FULL_ERROR=1``: with the traceback); a
    multirun's failed job fails alone (see landmark_tl.training.jobs)."""
    config = to_train_config(cfg)
    with claimed_run_dir(cfg, config) as run_dir:
        metrics = train(config, run_dir, HydraConfig.get().overrides.task)
    if is_rank_zero():
        print(summary(metrics, run_dir), flush=True)
    return metric_at(metrics, config.optimized_metric)


if __name__ == "__main__":
    sys.exit(main())
