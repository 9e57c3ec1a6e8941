"""Fit a strategy stage by stage: one ``Trainer.fit`` per stage, then test its tasks."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from landmark_tl.config.lightning import VAL_LOSS, Monitor
from landmark_tl.core.errors import ConfigError
from landmark_tl.core.io import atomic_write_bytes, atomic_write_text
from landmark_tl.evaluation.metrics import score_predictions
from landmark_tl.evaluation.registry import registered_metrics
from landmark_tl.models.backbone import Backbone
from landmark_tl.models.ema import WeightEMA
from landmark_tl.models.strategies.base import TwoLevelStrategy
from landmark_tl.models.strategies.stages import StageConfig, TestOutputs
from landmark_tl.training.checkpointing import (
    FrozenBackboneIO,
    RandomStreams,
    restore_frozen_backbone,
)
from landmark_tl.training.divergence import StopOnDivergence

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """What one stage produced: scores of its tasks, best checkpoint, wall time."""

    name: str
    tasks: tuple[str, ...]
    scores: dict[str, dict[str, float]]
    val_scores: dict[str, dict[str, float]]
    best_checkpoint: str  # relative to the run dir (Lightning resolves links), so it can move
    best_val_loss: float | None  # None without a validation split (the last epoch is kept)
    epochs_run: int
    seconds: float
    monitor: str | None = "val/loss"  # None: no validation split, the last epoch kept
    best_score: float | None = None  # of the monitor; None: no checkpoint was kept
    # the same, for the average of the weights saved with that checkpoint (WeightEMA)
    ema_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    ema_val_scores: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class FitResult:
    stages: list[StageResult] = field(default_factory=list)
    test_outputs: TestOutputs = field(default_factory=TestOutputs)

    def task_scores(self, ema: bool = False) -> dict[str, dict[str, Any]]:
        """Per task, the test scores from the stage that trained it (the last such stage);
        ``ema``: those of the averaged weights (none without a WeightEMA)."""
        return {
            t: {**scores[t], "stage": s.name}
            for s in self.stages
            for scores in [s.ema_scores if ema else s.scores]
            for t in s.tasks
            if t in scores
        }

    def task_val_scores(self, ema: bool = False) -> dict[str, dict[str, float]]:
        """Per task, the validation scores of the checkpoint that was tested (none without
        a validation split); ``ema``: those of its averaged weights."""
        return {
            t: scores[t]
            for s in self.stages
            for scores in [s.ema_val_scores if ema else s.val_scores]
            for t in s.tasks
            if t in scores
        }


class RelocatableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved state survives a moved or copied run dir.

    Lightning keeps absolute paths in the state it saves and, when the folder differs on
    resume, keeps only ``best_model_path`` — the *old* folder's file. Paths saved under the
    old checkpoint folder are mapped into this one before Lightning restores them.
    """

    @property
    def state_key(self) -> str:
        """Names the file too: a stage's best and last checkpoints keep separate states."""
        return self._generate_state_key(
            filename=self.filename, monitor=self.monitor, mode=self.mode
        )

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath: Any) -> None:
        """No warning: every stage writes its own ``<stage>-*.ckpt`` into the run's one
        checkpoints/ folder, and a run dir holds one run (fingerprint.claim_run_dir)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            state_dict = _relocated(state_dict, Path(old), Path(new))
        super().load_state_dict(state_dict)


def _relocated(state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    def move(path: Any) -> Any:
        if not path or not Path(path).is_relative_to(old):
            return path
        return str(new / Path(path).relative_to(old))

    paths = ("best_model_path", "kth_best_model_path", "last_model_path")
    moved = {key: move(state.get(key)) for key in paths if key in state}
    if "best_k_models" in state:
        moved["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return {**state, **moved, "dirpath": str(new)}


def checkpoint_callbacks(
    stage: str, run_dir: Path, monitor: Monitor | None
) -> list[ModelCheckpoint]:
    """Keep ``<stage>-best.ckpt`` by the monitor (the last epoch when it is None: no
    validation split; the Trainer's ``checkpoint_callback``) and ``<stage>-last.ckpt``
    every epoch, what a resume starts from (Lightning's ``save_last`` writes it only in the
    epochs that improve the best)."""
    best, last = (
        RelocatableCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename=f"{stage}-{kind}",
            monitor=watched,
            mode="min" if watched is None else monitor.mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        for kind, watched in (("best", monitor and monitor.key), ("last", None))
    )
    return [best, last]


def early_stopping(config: StageConfig, monitor: Monitor | None) -> list[L.Callback]:
    """Early stopping on the monitor when the stage has a patience (and a validation split)."""
    if config.patience is None or monitor is None:
        return []
    return [EarlyStopping(monitor=monitor.key, mode=monitor.mode, patience=config.patience)]


def csv_logger(stage: str, run_dir: Path) -> list[Logger]:
    """The default logging: ``logs/<stage>/metrics.csv`` (what plots and reports read)."""
    return [CSVLogger(run_dir, name="logs", version=stage)]


def build_trainer(
    stage: str,
    config: StageConfig,
    run_dir: Path,
    validate: bool = True,
    *,
    monitor: Monitor = VAL_LOSS,
    loggers: list[Logger] | None = None,
    callbacks: Sequence[L.Callback] = (),
    backbone: Backbone | None = None,
    **trainer_kwargs: Any,
) -> L.Trainer:
    """A Trainer for one stage: best checkpoint and early stopping by ``monitor`` (the last
    epoch when there is no validation split), failure when it diverges, the given loggers
    (default: CSV under logs/<stage>) and extra callbacks; checkpoints keep the random
    streams and leave a frozen ``backbone`` out (see landmark_tl.training.checkpointing);
    ``trainer_kwargs`` are further Trainer arguments and may replace the defaults below."""
    watched = monitor if validate else None
    arguments = {
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,  # keeps the random stream of a resumed fit the same
        "inference_mode": False,  # no_grad instead: metric states stay usable next stage
        **trainer_kwargs,
    }
    if not validate:
        arguments["limit_val_batches"] = 0
    try:
        return L.Trainer(
            **arguments,
            max_epochs=config.epochs,
            callbacks=[
                *checkpoint_callbacks(stage, run_dir, watched),
                RandomStreams(),
                StopOnDivergence(stage, config.lr),
                *early_stopping(config, watched),
                *callbacks,
            ],
            plugins=[] if backbone is None else [FrozenBackboneIO(backbone)],
            logger=csv_logger(stage, run_dir) if loggers is None else loggers,
            default_root_dir=run_dir,
        )
    except MisconfigurationException as err:  # e.g. more devices than the machine has
        raise ConfigError(
            f"trainer: Lightning cannot use these settings ({err}); fix the trainer.* keys "
            "(trainer=auto or trainer=cpu run on any machine)"
        ) from err


def check_monitor(module: TwoLevelStrategy, monitor: Monitor, averaging: bool = False) -> None:
    """Refuse a monitor that some stage of ``module`` does not log (``averaging``: a
    WeightEMA also scores the averaged weights as val_ema/*)."""
    for stage in module.stage_names:
        logged = module.logged_keys(stage)
        if averaging and module.averaged_weights(stage):
            logged += module.logged_keys(stage, "val_ema")
        if monitor.key not in logged:
            raise ConfigError(
                f"strategy.monitor={monitor.key}: stage '{stage}' of {type(module).__name__} "
                f"does not log it; it logs {logged}"
            )


def split_is_empty(datamodule: L.LightningDataModule, split: str) -> bool:
    """Whether ``split`` has no images (data.split.<split>=0 or a split file without it)."""
    return len(datamodule.datasets[split]) == 0


def check_stages_fit_split(module: TwoLevelStrategy, datamodule: L.LightningDataModule) -> None:
    """Refuse, before any training, early stopping that has no validation split to watch,
    and options of the strategy that the split sizes cannot serve."""
    module.check_split_sizes({s: len(d) for s, d in datamodule.datasets.items()})
    if not split_is_empty(datamodule, "val"):
        return
    waiting = [name for name, stage in module.stages.items() if stage.patience is not None]
    if waiting:
        raise ConfigError(
            f"strategy.stages.{waiting[0]}.patience={module.stages[waiting[0]].patience}: "
            "early stopping needs validation images, and the split has none; set "
            "data.split.val above 0 (or add val rows to the split file), or patience=null"
        )


def fit_stages(
    module: TwoLevelStrategy,
    datamodule: L.LightningDataModule,
    run_dir: str | Path,
    *,
    seed: int | None = None,
    resume: bool = False,
    monitor: Monitor = VAL_LOSS,
    loggers: Callable[[str], list[Logger]] | None = None,
    callbacks: Callable[[], list[L.Callback]] | None = None,
    **trainer_kwargs: Any,
) -> FitResult:
    """Run every stage of ``module``; test each stage's tasks with its best checkpoint.

    ``monitor`` picks each stage's best checkpoint and stops it early; ``loggers(stage)``
    and ``callbacks()`` make each stage's loggers (default: CSV) and extra callbacks.

    Each stage starts from ``seed + its index`` when a seed is given, so a stage's result
    does not depend on what ran before it in this process. With ``resume``, stages whose
    results were saved are taken as they are (their best weights reloaded), and an
    interrupted stage continues from ``checkpoints/<stage>-last.ckpt``.
    """
    run_dir = Path(run_dir)
    averaging = callbacks is not None and any(isinstance(c, WeightEMA) for c in callbacks())
    check_monitor(module, monitor, averaging)
    check_stages_fit_split(module, datamodule)
    validate = not split_is_empty(datamodule, "val")
    result = FitResult()
    for index, stage in enumerate(module.stage_names):
        module.begin_stage(stage)
        saved = run_dir / "stages" / f"{stage}.pt"
        if resume and saved.exists():
            restore_stage(module, run_dir, saved, result)
            continue
        if seed is not None:
            L.seed_everything(seed + index, workers=True, verbose=False)
        last = run_dir / "checkpoints" / f"{stage}-last.ckpt"
        ckpt_path = last if resume and last.exists() else None
        earlier_log = None
        if ckpt_path is not None:
            read_checkpoint(ckpt_path)  # refuse a damaged file with a clear message
            log.info("stage %s: resuming from %s", stage, ckpt_path)
            earlier_log = _read_log(run_dir / "logs" / stage / "metrics.csv")
        trainer = build_trainer(
            stage,
            module.stages[stage],
            run_dir,
            validate,
            monitor=monitor,
            loggers=None if loggers is None else loggers(stage),
            callbacks=() if callbacks is None else callbacks(),
            backbone=module.backbone,
            **trainer_kwargs,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            for message in module.intended_notices:  # what the strategy does on purpose
                warnings.filterwarnings("ignore", message=message)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        seconds = time.perf_counter() - start
        stage_result, outputs = _test_stage(trainer, module, datamodule, run_dir, seconds)
        if earlier_log:
            _prepend_log(run_dir / "logs" / stage / "metrics.csv", earlier_log)
        merge_stage(result, stage_result, outputs)
        if trainer.is_global_zero:
            save_stage(saved, stage_result, outputs)
        log.info("stage %s: %s in %.1f s", stage, stage_result.scores, seconds)
    return result


def _test_stage(
    trainer: L.Trainer,
    module: TwoLevelStrategy,
    datamodule: L.LightningDataModule,
    run_dir: Path,
    seconds: float,
) -> tuple[StageResult, TestOutputs]:
    """Test and validate the stage's best checkpoint (each split only when it has images;
    the final weights when no checkpoint was kept, e.g. under ``trainer.fast_dev_run``)."""
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path or None  # the path: the stage has two ModelCheckpoints
    tasks = module.tasks
    outputs, averaged = TestOutputs(), TestOutputs()
    if not split_is_empty(datamodule, "test"):
        trainer.test(
            module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
        )
        outputs = _of_tasks(module.test_outputs, tasks)
        averaged = _of_tasks(module.test_outputs_ema, tasks)
    val_scores, ema_val_scores, val_loss = {}, {}, None
    if not split_is_empty(datamodule, "val"):
        with trackers_apart(trainer):
            val = trainer.validate(
                module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
            )[0]
        val_loss = float(val["val/loss"])
        val_scores, ema_val_scores = (
            {
                t: {m.field: float(val[f"{split}/{t}_{m.name}"]) for m in registered_metrics()}
                for t in tasks
                if all(f"{split}/{t}_{m.name}" in val for m in registered_metrics())
            }
            for split in ("val", "val_ema")
        )
    score = checkpoint.best_model_score if checkpoint.monitor else None
    stage_result = StageResult(
        name=module.stage,
        tasks=tasks,
        scores=_scores(module, outputs),
        ema_scores=_scores(module, averaged),
        val_scores=val_scores,
        ema_val_scores=ema_val_scores,
        best_checkpoint=Path(checkpoint.best_model_path).relative_to(run_dir.resolve()).as_posix()
        if best
        else "",
        best_val_loss=val_loss,
        epochs_run=trainer.current_epoch,
        seconds=seconds,
        monitor=checkpoint.monitor,
        best_score=None if score is None else float(score),
    )
    return stage_result, outputs


REVALIDATION = "best_checkpoint"  # trackers' prefix of the re-validation of the kept checkpoint


@contextlib.contextmanager
def trackers_apart(trainer: L.Trainer) -> Iterator[None]:
    """Validate the kept checkpoint again without adding a point to the trackers' val
    curves: inside the block only the CSV log records (the plots read that row as the
    chosen epoch, see plots.split_revalidation); after it, the other loggers get the
    values once, as ``best_checkpoint/val/...``."""
    loggers = trainer.loggers
    trainer.loggers = [lg for lg in loggers if isinstance(lg, CSVLogger)]
    try:
        yield
    finally:
        trainer.loggers = loggers
    values = {
        f"{REVALIDATION}/{key}": float(value)
        for key, value in trainer.callback_metrics.items()
        if key.startswith(("val/", "val_ema/"))
    }
    for logger in loggers:
        if not isinstance(logger, CSVLogger) and values:
            logger.log_metrics(values, step=trainer.global_step)
            logger.save()


def _of_tasks(tested: TestOutputs, tasks: tuple[str, ...]) -> TestOutputs:
    """The outputs of ``tasks`` (none when ``tested`` has none, e.g. no average)."""
    present = [t for t in tasks if t in tested.preds]
    return TestOutputs(
        {t: tested.preds[t] for t in present},
        {t: tested.targets[t] for t in present},
        {t: tested.probs[t] for t in present},
    )


def _scores(module: TwoLevelStrategy, outputs: TestOutputs) -> dict[str, dict[str, float]]:
    return {
        t: score_predictions(
            outputs.preds[t], outputs.targets[t], module.num_classes[t], outputs.probs[t]
        )
        for t in outputs.preds
    }


def merge_stage(result: FitResult, stage: StageResult, outputs: TestOutputs) -> None:
    result.stages.append(stage)
    for task in outputs.preds:
        result.test_outputs.preds[task] = outputs.preds[task]
        result.test_outputs.targets[task] = outputs.targets[task]
        result.test_outputs.probs[task] = outputs.probs[task]


def _read_log(path: Path) -> list[dict[str, str]]:
    """Rows of a stage's CSV log (Lightning rewrites the file when a fit resumes)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _prepend_log(path: Path, earlier: list[dict[str, str]]) -> None:
    """Put the epochs logged before an interruption back in front of the resumed ones."""
    resumed = _read_log(path)
    first = min((int(r["epoch"]) for r in resumed if r.get("epoch")), default=None)
    kept = [r for r in earlier if first is None or int(r.get("epoch") or 0) < first]
    columns = list(dict.fromkeys(k for row in kept + resumed for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept + resumed)
    atomic_write_text(path, out.getvalue())


def save_stage(path: Path, stage: StageResult, outputs: TestOutputs) -> None:
    """The finished stage's results, so a resumed run need not redo it."""
    buffer = io.BytesIO()
    torch.save({"result": asdict(stage), "outputs": asdict(outputs)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def restore_stage(module: TwoLevelStrategy, run_dir: Path, path: Path, result: FitResult) -> None:
    """Take a finished stage's saved results and put its best weights back in ``module``."""
    saved = read_checkpoint(path)
    stage = StageResult(**{**saved["result"], "tasks": tuple(saved["result"]["tasks"])})
    best = restore_frozen_backbone(
        read_checkpoint(run_dir / stage.best_checkpoint), module.backbone
    )
    module.load_state_dict(best["state_dict"])
    merge_stage(result, stage, TestOutputs(**saved["outputs"]))
    log.info("stage %s: finished before, results and best weights restored", stage.name)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint or saved stage safely (tensors and plain data only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated, corrupted, or needs arbitrary code: refuse
        raise RuntimeError(
            f"{path} cannot be loaded safely ({type(err).__name__}: {str(err)[:200]}); "
            "it is damaged or not a landmark_tl file: delete it to redo its stage"
        ) from err
