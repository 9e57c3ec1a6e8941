"""The run's Lightning loggers (``logger`` group): CSV, TensorBoard, MLflow, W&B or any other.

Each ``logger.<name>`` entry names its class with ``_target_``; its ``run_args`` say where
it writes in the run, as templates filled in for each stage (one Trainer per stage), e.g.
``save_dir: "{run_dir}"``, ``version: "{stage}"`` (:data:`PLACEHOLDERS` lists the names).
So adding a logger is one YAML in ``conf/logger/``; an entry without ``run_args`` gets
none. Trackers are checked and their run opened when the run starts (a missing package or
an unreachable tracking URI fails before any training).

Every logger gets the full resolved config, flattened (``strategy.lr``, ``data.batch_size``
...), as its hyperparameters. MLflow gets one run per training run, in one experiment per
multirun: the config as params, the curves as ``<stage>/<split>/<metric>``
(``joint/val/loss``), the re-validation of each stage's kept checkpoint apart from them
(``joint/best_checkpoint/val/loss``), the final test/validation scores, and the run dir's
files as artifacts (metrics.json, config, plots, report, export/ when present), stored
under ``<paths.output_dir>/mlartifacts`` with the default local store. TensorBoard gets
one event folder per stage (``tensorboard/<stage>``) and one for the whole run
(``tensorboard/run``: the config and the final scores, for its HParams view).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import string
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from landmark_tl.config.lightning import resolve_target
from landmark_tl.core.errors import ConfigError
from landmark_tl.core.io import atomic_write_json
from landmark_tl.runs.rundir import BACKBONE_WEIGHTS

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "landmark_tl"
ARTIFACT_DIRS = ("plots", "export", ".hydra")  # run-dir folders logged as artifacts, if there
TRACKING_FILE = "mlflow_run.json"  # the run's MLflow run, for files added later (export)
# The package each tracker needs, and the extra of landmark_tl that installs it.
_PACKAGES = {
    TensorBoardLogger: (("tensorboard", "tensorboardX"), "tensorboard"),
    MLFlowLogger: (("mlflow",), "mlflow"),
    WandbLogger: (("wandb",), "wandb"),
}
# The names a logger's ``run_args`` templates may use (str.format fields), filled in per
# stage: the run dir, its folder name, the stage (``run`` for a tracker's whole-run
# summary), the experiment (the MLflow logger's experiment_name, else the multirun's folder
# name, else landmark_tl), and the tracking run that logger=mlflow opened (rank 0 only:
# an argument naming one of those is left out where there is none).
PLACEHOLDERS = ("run_dir", "run_name", "stage", "experiment", "tracking_uri", "run_id")


def default_experiment_name(run_dir: Path) -> str:
    """The multirun's folder name for a job of a multirun (Hydra writes multirun.yaml in
    the sweep dir before starting jobs), so one multirun is one experiment; else
    ``landmark_tl``."""
    return (
        run_dir.parent.name if (run_dir.parent / "multirun.yaml").is_file() else DEFAULT_EXPERIMENT
    )


def default_tracking_uri(output_dir: str | Path) -> str:
    """A local SQLite store under the output dir: works offline, readable by ``mlflow ui``."""
    path = Path(output_dir).expanduser().resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def default_artifact_location(output_dir: str | Path) -> str:
    """Where the default store keeps artifacts: beside it, not ``./mlruns`` in the cwd."""
    return (Path(output_dir).expanduser().resolve() / "mlartifacts").as_uri()


def config_params(config: Any) -> dict[str, Any]:
    """The resolved config (a TrainConfig or DictConfig) flattened to ``a.b.c`` keys with
    scalar values (lists and None as text), as trackers take hyperparameters."""
    from omegaconf import OmegaConf

    tree = config if OmegaConf.is_config(config) else OmegaConf.structured(config)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, bool | int | float | str):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    walk("", OmegaConf.to_container(tree, resolve=True, enum_to_str=True))
    return flat


class RunLoggers:
    """The loggers of one training run: checked and opened at start, fresh Lightning
    loggers for each stage, final scores recorded at the end."""

    def __init__(
        self,
        specs: Mapping[str, Mapping[str, Any] | None],
        run_dir: Path,
        output_dir: str | Path,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.params = dict(params or {})  # the flattened config (config_params)
        self.specs = {name: dict(spec) for name, spec in specs.items() if spec is not None}
        self.run_args = {
            name: _run_args(name, spec.pop("run_args", None)) for name, spec in self.specs.items()
        }
        self.classes = {n: resolve_target("logger", n, s) for n, s in self.specs.items()}
        self.experiment = default_experiment_name(self.run_dir)
        self.mlflow: MlflowRun | None = None
        for name, cls in self.classes.items():
            if not issubclass(cls, Logger):
                raise ConfigError(
                    f"logger.{name}._target_={cls.__name__} is not a Lightning Logger"
                )
            _check_package(name, cls)
            if issubclass(cls, MLFlowLogger) and rank_zero_only.rank == 0:  # one run per run
                spec = self.specs[name]
                self.experiment = spec.pop("experiment_name", None) or default_experiment_name(
                    self.run_dir
                )
                uri = spec.pop("tracking_uri", None)
                artifacts = None if uri else default_artifact_location(output_dir)
                uri = uri or default_tracking_uri(output_dir)
                self.mlflow = MlflowRun.open(uri, self.experiment, self.run_dir.name, artifacts)
                self.mlflow.log_params(self.params)
                atomic_write_json(
                    self.run_dir / TRACKING_FILE,
                    {"tracking_uri": uri, "run_id": self.mlflow.run_id},
                )

    def for_stage(self, stage: str) -> list[Logger]:
        """New logger objects for ``stage``'s Trainer, in the order given, each with the
        config as hyperparameters (MLflow has them as the run's params already)."""
        loggers = [
            instantiate(self.specs[name], **self._run_arguments(name, stage))
            for name in self.classes
        ]
        for logger in loggers:
            if isinstance(logger, MLFlowLogger):
                logger.LOGGER_JOIN_CHAR = "/"  # <stage>/<split>/<metric>, not <stage>-<split>/...
            elif self.params:
                logger.log_hyperparams(self.params)
        return loggers

    def _run_arguments(self, name: str, stage: str) -> dict[str, Any]:
        """``logger.<name>.run_args`` with the placeholders of this run and ``stage``."""
        values = {
            "run_dir": str(self.run_dir),
            "run_name": self.run_dir.name,
            "stage": stage,
            "experiment": self.experiment,
            "tracking_uri": self.mlflow.tracking_uri if self.mlflow else None,
            "run_id": self.mlflow.run_id if self.mlflow else None,
        }
        arguments = {}
        for key, value in self.run_args[name].items():
            if not isinstance(value, str):
                arguments[key] = value
            elif all(values[field] is not None for field in _fields(value)):
                arguments[key] = value.format_map(values)
        return arguments

    def finish(self, metrics: Mapping[str, Any], overrides: Sequence[str]) -> None:
        """Record the final scores (and the command line) with the trackers that keep
        them; MLflow also gets the run dir's files."""
        scores = final_scores(metrics)
        for name, cls in self.classes.items():
            if issubclass(cls, TensorBoardLogger) and rank_zero_only.rank == 0:
                # one session per run for TensorBoard's HParams view: config, final scores
                summary = instantiate(self.specs[name], **self._run_arguments(name, "run"))
                summary.log_hyperparams(self.params, metrics=scores)
                summary.finalize("success")
        if self.mlflow is not None:
            self.mlflow.finish(run_params(metrics, overrides), scores, self.run_dir)

    def fail(self) -> None:
        """Mark the tracking run failed (training raised)."""
        if self.mlflow is not None:
            self.mlflow.terminate("FAILED")


def _fields(template: str) -> list[str]:
    """The placeholder names of a ``str.format`` template."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _run_args(name: str, run_args: Any) -> dict[str, Any]:
    """``logger.<name>.run_args`` checked: a mapping whose templates name only known
    placeholders (``{run_dir}`` ...); a ConfigError names the key and the choices."""
    if run_args is None:
        return {}
    if not isinstance(run_args, Mapping):
        raise ConfigError(
            f"logger.{name}.run_args={run_args!r}: give a mapping of the logger's arguments "
            "to values or templates, e.g. {save_dir: '{run_dir}', version: '{stage}'}"
        )
    for key, value in run_args.items():
        if not isinstance(value, str):
            continue
        try:
            unknown = [field for field in _fields(value) if field not in PLACEHOLDERS]
        except ValueError as error:  # an unmatched brace
            raise ConfigError(f"logger.{name}.run_args.{key}={value!r}: {error}") from error
        if unknown:
            raise ConfigError(
                f"logger.{name}.run_args.{key}={value!r}: no placeholder {{{unknown[0]}}}; "
                f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
    return dict(run_args)


def _check_package(name: str, cls: type) -> None:
    for logger_cls, (modules, extra) in _PACKAGES.items():
        if issubclass(cls, logger_cls) and not any(importlib.util.find_spec(m) for m in modules):
            raise ConfigError(
                f"logger.{name} needs the {modules[0]} package, which is not installed: "
                f"pip install 'landmark_tl[{extra}]' (or remove logger.{name})"
            )


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """No HTTP retries while checking a tracking server (MLflow retries for minutes)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MlflowRun:
    """One MLflow run that every stage's MLFlowLogger writes into."""

    def __init__(self, client: Any, tracking_uri: str, run_id: str) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.run_id = run_id

    @classmethod
    def open(
        cls, tracking_uri: str, experiment: str, run_name: str, artifacts: str | None = None
    ) -> MlflowRun:
        """Create the run (and the experiment if new, its artifacts at ``artifacts`` when
        given); refuses an unreachable store."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            with _fail_fast():
                client = MlflowClient(tracking_uri)
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    try:
                        experiment_id = client.create_experiment(
                            experiment, artifact_location=artifacts
                        )
                    except MlflowException:  # a parallel job of the multirun created it
                        experiment_id = client.get_experiment_by_name(experiment).experiment_id
                else:
                    experiment_id = found.experiment_id
                run = client.create_run(experiment_id, run_name=run_name)
        except Exception as err:
            raise ConfigError(
                f"logger.mlflow.tracking_uri={tracking_uri} cannot be used "
                f"({type(err).__name__}: {str(err)[:300]}); start the tracking server, fix "
                "the URI, or leave it null for a local SQLite store"
            ) from err
        log.info("MLflow: experiment %s, run %s at %s", experiment, run.info.run_id, tracking_uri)
        return cls(client, tracking_uri, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """``params`` as the run's params, in MLflow's batches of at most 100."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def finish(self, params: Mapping[str, str], scores: Mapping[str, float], run_dir: Path) -> None:
        """Log the last params, the final scores and the run dir's files; close the run."""
        from mlflow.entities import Metric

        self.log_params(params)
        items = [Metric(k, v, 0, 0) for k, v in scores.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])
        for path in run_artifacts(run_dir):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))
        self.terminate("FINISHED")

    def terminate(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def log_to_tracked_run(run_dir: Path, folder: Path, artifact_path: str) -> bool:
    """Add ``folder``'s files to the MLflow run of ``run_dir`` (one trained with
    logger=mlflow: it has a mlflow_run.json); whether there was one."""
    path = run_dir / TRACKING_FILE
    if not path.is_file():
        return False
    from mlflow.tracking import MlflowClient

    tracked = json.loads(path.read_text(encoding="utf-8"))
    with _fail_fast():
        MlflowClient(tracked["tracking_uri"]).log_artifacts(
            tracked["run_id"], str(folder), artifact_path=artifact_path
        )
    log.info("logged %s to MLflow run %s", folder, tracked["run_id"])
    return True


def run_artifacts(run_dir: Path) -> list[Path]:
    """The run dir's files a tracker keeps: its top-level files (metrics.json, config,
    split, predictions, report, log), plots/, export/ and .hydra/ when present; not the
    checkpoints nor a kept copy of the backbone's weights (large, and in the run dir)."""
    files = sorted(p for p in run_dir.iterdir() if p.is_file() and p.name != BACKBONE_WEIGHTS)
    return files + [run_dir / d for d in ARTIFACT_DIRS if (run_dir / d).is_dir()]


def run_params(metrics: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, str]:
    """The params known at the end: the approach (the config has the rest) and the
    command line's overrides as one text."""
    params = {"approach": str(metrics["approach"])} if "approach" in metrics else {}
    if overrides:
        params["overrides"] = " ".join(overrides)
    return params


def final_scores(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The test, validation and hierarchy scores and timings of metrics.json, flat
    (``test/landmark/macro_f1`` ...)."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix] = float(value)

    for section in ("test", "val", "hierarchy", "timings"):
        walk(section, metrics.get(section, {}))
    return flat
