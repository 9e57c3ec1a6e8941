"""A training command as a Hydra job: its run dir claimed before anything is written there,
and in a multirun, a failed job that fails alone.

Hydra writes ``.hydra/`` (config.yaml, hydra.yaml, overrides.yaml) before the task starts,
so a refused command would rewrite a finished run's record; ``hydra.output_subdir`` is
null in conf/hydra/default.yaml and :func:`claimed_run_dir` writes those files itself, once
the run dir is locked (:mod:`landmark_tl.runs.runlock`) and the run may start there.

In a multirun, Hydra's launchers run every job and the sweeper raises the first failure
when they are done; :func:`one_job` turns a failure into :class:`JobFailed`, which Hydra
prints as its message alone (exit code 1), listing every job that failed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from landmark_tl.core.errors import UserError, debugging
from landmark_tl.core.io import atomic_write_text, printable
from landmark_tl.runs.fingerprint import FILENAME, RunDirError, claim_run_dir
from landmark_tl.runs.rundir import FAILED_FILE
from landmark_tl.runs.runlock import run_dir_lock

HYDRA_DIR = ".hydra"
F = TypeVar("F", bound=Callable[..., Any])
# The failures of each multirun (by sweep dir) in this process, in the order they came.
_FAILED: dict[str, list[str]] = {}


class JobFailed(CompactHydraException):
    """A job of a multirun failed; the others ran. The message lists every failed job of
    the multirun (all of them by the time the sweeper raises it)."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(failures)  # as args: a process launcher (joblib) can pickle it
        self.failures = failures  # shared by the multirun's JobFailed errors

    def __str__(self) -> str:
        return (
            f"error: {len(self.failures)} job(s) of the multirun failed (the others ran; "
            f"each failed run dir has {FAILED_FILE}):\n  " + "\n  ".join(self.failures)
        )


def is_multirun() -> bool:
    """Whether the current Hydra job is one of a multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (a UserError's alone; others with their type)."""
    text = " ".join(str(error).split())
    text = text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"
    return printable(text[:400])


def one_job(task: F) -> F:
    """Decorate a Hydra task: in a multirun, a failure is recorded in the job's run dir
    (``failed.json``, unless the dir belongs to another run) and raised as
    :class:`JobFailed`, so the launcher goes on to the next job. A single run raises the
    error as it is; ``--debug`` too, once failed.json is written."""

    @functools.wraps(task)
    def run(cfg: DictConfig, *args: Any, **kwargs: Any) -> Any:
        try:
            return task(cfg, *args, **kwargs)
        except Exception as error:
            if not is_multirun():
                raise
            hydra = HydraConfig.get()
            run_dir = Path(hydra.runtime.output_dir)
            note_failure(run_dir, error)
            if debugging():
                raise
            failures = _FAILED.setdefault(str(hydra.sweep.dir), [])
            failures.append(f"#{hydra.job.num} {printable(str(run_dir))}: {one_line(error)}")
            raise JobFailed(failures) from error

    return run  # type: ignore[return-value]


def note_failure(run_dir: Path, error: BaseException) -> None:
    """Write ``failed.json`` for a job that stopped before its run wrote one (e.g. a bad
    config value), unless the run dir belongs to another run (a refusal)."""
    if isinstance(error, RunDirError) or (run_dir / FAILED_FILE).exists():
        return
    from landmark_tl.training.run import record_failure  # train imports this module

    record_failure(run_dir, error)


@contextmanager
def claimed_run_dir(cfg: DictConfig, config: Any) -> Iterator[Path]:
    """The job's run dir, locked for the block once ``config`` may run there (a refusal
    writes nothing); Hydra's ``.hydra/`` files are written then, for a run that starts
    there (a resumed run keeps the record of its start). ``resume=true`` of a single run
    refuses a dir where no run ever started (a mistyped ``hydra.run.dir``)."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    if rank_zero_only.rank != 0:  # data-parallel ranks > 0: rank 0 owns the dir
        yield run_dir
        return
    with run_dir_lock(run_dir):
        recorded = claim_run_dir(run_dir, config, config.resume)
        started = recorded is not None or (run_dir / HYDRA_DIR / "config.yaml").exists()
        if config.resume and not started and not is_multirun():
            raise RunDirError(
                f"resume=true: {printable(str(run_dir))} holds no run to continue (no "
                f"{FILENAME}, no {HYDRA_DIR}/): give the dir of the run "
                "(hydra.run.dir=...), or leave resume out to start a new run"
            )
        if recorded is None and hydra.output_subdir is None:
            write_hydra_files(run_dir, cfg)
        yield run_dir


def write_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` of the current job, as
    Hydra's ``run_job`` writes them."""
    hydra = HydraConfig.instance().cfg
    files = {
        "config.yaml": cfg,
        "hydra.yaml": hydra,
        "overrides.yaml": hydra.hydra.overrides.task,
    }
    for name, content in files.items():
        atomic_write_text(run_dir / HYDRA_DIR / name, OmegaConf.to_yaml(content))
