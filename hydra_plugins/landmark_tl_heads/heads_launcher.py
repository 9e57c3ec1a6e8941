"""``hydra/launcher=heads``: a multirun's jobs that share features train their heads together.

Hydra finds launchers in the ``hydra_plugins`` namespace package (it imports every module
there when it starts, so this one stays light: landmark_tl and torch load only when a
multirun launches). The work is done by :mod:`landmark_tl.sweep.launch`.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class HeadsLauncherConf:
    _target_: str = "hydra_plugins.landmark_tl_heads.heads_launcher.HeadsLauncher"
    # torch threads while a head batch trains (1: small ops run fastest on one thread;
    # 0: torch's own setting). Jobs that run alone keep torch's setting.
    threads: int = 1
    # head batches that train at once, in threads of the launching process (their loops
    # run side by side; set-up and writing one at a time)
    workers: int = 2


ConfigStore.instance().store(
    group="hydra/launcher", name="heads", node=HeadsLauncherConf, provider="landmark_tl"
)


class HeadsLauncher(Launcher):
    """Groups the jobs whose heads can step together and trains each group as one
    vectorised fit in this process; other jobs run one after another as with Hydra's
    basic launcher. Every job gets its own run dir and JobReturn, in job order."""

    def __init__(self, threads: int = 1, workers: int = 2) -> None:
        self.threads = threads
        self.workers = workers
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        from landmark_tl.sweep.compose import remember_sweep_configs  # heavy: only now

        remember_sweep_configs(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from landmark_tl.sweep.launch import launch_jobs  # heavy: only when launching

        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs, heads batched where they share features", len(job_overrides))
        return launch_jobs(
            self.hydra_context,
            self.task_function,
            self.config,
            job_overrides,
            initial_job_idx,
            self.threads,
            self.workers,
        )
