"""What the ``heads`` launcher does with a multirun's jobs (see hydra_plugins/landmark_tl_heads).

Each job's config is composed as Hydra's basic launcher composes it; jobs that can share
a head batch (:func:`landmark_tl.sweep.grouping.group_jobs`) are trained together by
:func:`landmark_tl.sweep.group.run_group`, the others run through the task function as
usual. Hydra's own per-job handling (``.hydra/`` files, the job log, callbacks, the
JobReturn a sweeper such as Optuna reads) goes through ``run_job`` for every job, batched
or not; for a batched job its task only writes out what the group computed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from landmark_tl.config.schema import TrainConfig, to_train_config, validate_config
from landmark_tl.core.threads import torch_threads
from landmark_tl.runs.fingerprint import RunDirError
from landmark_tl.runs.runlock import run_dir_lock
from landmark_tl.sweep.group import Member, run_group
from landmark_tl.sweep.group_data import SharedData
from landmark_tl.sweep.grouping import group_jobs, unbatchable_reason
from landmark_tl.training.build import feature_device
from landmark_tl.training.jobs import HYDRA_DIR, one_job, write_hydra_files
from landmark_tl.training.run import metric_at, summary

log = logging.getLogger(__name__)


def job_configs(
    hydra_context: HydraContext,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[DictConfig]:
    """Each job's composed config, numbered as the basic launcher numbers them."""
    configs = []
    for offset, overrides in enumerate(job_overrides):
        index = initial_job_idx + offset
        job = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job):
            job.hydra.job.id = index
            job.hydra.job.num = index
        configs.append(job)
    return configs


def job_output_dir(job: DictConfig) -> str:
    """The run dir ``run_job`` gives the job: ``hydra.sweep.dir/hydra.sweep.subdir``."""
    HydraConfig.instance().set_config(job)
    sweep = OmegaConf.select(job, "hydra.sweep.dir")
    return os.path.abspath(
        os.path.join(str(sweep), str(OmegaConf.select(job, "hydra.sweep.subdir")))
    )


def train_config_of(job: DictConfig) -> TrainConfig | None:
    """The job's TrainConfig; None when it does not compose or has a bad value (the job
    then runs alone, fails alone with its message and failed.json)."""
    task = OmegaConf.create(OmegaConf.to_container(job, resolve=False))
    with open_dict(task):
        del task["hydra"]
    try:
        config = to_train_config(task)
        validate_config(config)
        return config
    except Exception:  # noqa: BLE001 - the job runs as usual and fails with its message
        return None


def launch_jobs(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    threads: int | None = 1,
    workers: int = 1,
) -> list[JobReturn]:
    """Run every job (batched where possible: see :func:`train_batches` for ``threads``
    and ``workers``); their JobReturns in job order. The batches train first, then each
    job, in job order, runs alone or writes out what its batch computed."""
    jobs = job_configs(hydra_context, config, job_overrides, initial_job_idx)
    configs = [train_config_of(job) for job in jobs]
    composed = [i for i, c in enumerate(configs) if c is not None]
    groups, alone = group_jobs([configs[i] for i in composed])
    units = [([composed[i] for i in group], True) for group in groups]
    units += [([composed[i]], False) for i in alone]
    units += [([i], False) for i, c in enumerate(configs) if c is None]
    units.sort(key=lambda u: min(u[0]))
    batches = {
        tuple(unit): [
            Member(configs[i], Path(job_output_dir(jobs[i])), list(jobs[i].hydra.overrides.task))
            for i in unit
        ]
        for unit, batched in units
        if batched
    }
    outcomes = dict(zip(batches, train_batches(batches, threads, workers), strict=True))
    returns: dict[int, JobReturn] = {}
    for unit, batched in units:
        if not batched:
            index = unit[0]
            config_i = configs[index]
            reason = "bad config" if config_i is None else unbatchable_reason(config_i)
            log.info("\t#%d : %s (runs alone: %s)", index, _shown(jobs[index]), reason)
            returns[index] = _run(hydra_context, task_function, jobs[index])
            continue
        members, results = batches[tuple(unit)], outcomes[tuple(unit)]
        for index, member, outcome in zip(unit, members, results, strict=True):
            returns[index] = _run(hydra_context, _writer(member, outcome), jobs[index])
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[i] for i in range(len(jobs))]


def train_batches(
    batches: dict[tuple[int, ...], list[Member]], threads: int | None, workers: int
) -> list[list[Any]]:
    """Each batch's outcomes (per member its metrics or error), in the given order.

    ``workers`` batches train at once, in threads of this process (no imports or data to
    load again): their vectorised loops run side by side, the rest one at a time (see
    :data:`landmark_tl.sweep.group.SHARED_STATE`); each on ``threads`` torch threads.
    """

    data = SharedData()  # groups that read the same data set it up once

    def train(item: tuple[tuple[int, ...], list[Member]]) -> list[Any]:
        unit, members = item
        log.info("head batch of %d jobs: %s", len(unit), ", ".join(f"#{i}" for i in unit))
        try:
            return run_group(members, feature_device(members[0].config), None, data)
        except Exception as error:  # noqa: BLE001 - the group failed as a whole: each job says so
            log.error("head batch %s failed: %s", list(unit), error)
            return [error] * len(unit)

    with torch_threads(threads), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(train, batches.items()))


def _shown(job: DictConfig) -> str:
    return " ".join(filter_overrides(list(job.hydra.overrides.task)))


def _run(hydra_context: HydraContext, task_function: TaskFunction, job: DictConfig) -> JobReturn:
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=job,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _writer(member: Member, outcome: dict[str, Any] | BaseException) -> TaskFunction:
    """The task of a batched job: record its Hydra files (unless its dir was refused, or
    holds them from the start of a resumed run) and report what its group computed for it;
    a failure fails this job alone."""

    @one_job
    def task(cfg: DictConfig) -> float:
        run_dir = member.run_dir
        if not isinstance(outcome, RunDirError):
            with run_dir_lock(run_dir):
                if not (member.config.resume and (run_dir / HYDRA_DIR).exists()):
                    write_hydra_files(run_dir, cfg)
        if isinstance(outcome, BaseException):
            raise outcome
        print(summary(outcome, run_dir), flush=True)
        return metric_at(outcome, member.config.optimized_metric)

    return task
