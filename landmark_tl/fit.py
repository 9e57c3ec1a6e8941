"""Fit a strategy stage by stage: one ``Trainer.fit`` per stage, then test its tasks."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from landmark_tl.metrics import score_predictions
from landmark_tl.models.strategies.base import StageConfig, TestOutputs, TwoLevelStrategy

log = logging.getLogger(__name__)

# Lightning notices that say nothing about this run: an advert, an internal deprecation,
# and the eval-mode warning that a frozen backbone (kept in eval on purpose) triggers.
_ADVERT = "💡 Tip:"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ADVERT)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropNoise())
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Test predictions are gathered from all ranks and de-duplicated (TwoLevelStrategy).
warnings.filterwarnings("ignore", message=r"Using `DistributedSampler` with the dataloaders")
warnings.filterwarnings("ignore", message=r"torch.distributed.nn.functional.all_gather is deprec")
# Every stage writes its own <stage>-best.ckpt into the one checkpoints/ folder.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


@dataclass
class StageResult:
    """What one stage produced: scores of its tasks, best checkpoint, wall time."""

    name: str
    tasks: tuple[str, ...]
    scores: dict[str, dict[str, float]]
    val_scores: dict[str, dict[str, float]]
    best_checkpoint: str
    best_val_loss: float
    epochs_run: int
    seconds: float


@dataclass
class FitResult:
    stages: list[StageResult] = field(default_factory=list)
    test_outputs: TestOutputs = field(default_factory=TestOutputs)

    def task_scores(self) -> dict[str, dict[str, Any]]:
        """Per task, the test scores from the stage that trained it (the last such stage)."""
        return {t: {**s.scores[t], "stage": s.name} for s in self.stages for t in s.tasks}

    def task_val_scores(self) -> dict[str, dict[str, float]]:
        """Per task, the validation scores of the checkpoint that was tested."""
        return {t: s.val_scores[t] for s in self.stages for t in s.tasks}


def build_trainer(
    stage: str, config: StageConfig, run_dir: Path, **trainer_kwargs: Any
) -> L.Trainer:
    """A Trainer for one stage: best checkpoint by val/loss, CSV log under logs/<stage>."""
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename=f"{stage}-best",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
    ]
    if config.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=config.patience))
    return L.Trainer(
        max_epochs=config.epochs,
        callbacks=callbacks,
        logger=CSVLogger(run_dir, name="logs", version=stage),
        default_root_dir=run_dir,
        enable_model_summary=False,
        inference_mode=False,  # no_grad instead: metric states must stay usable next stage
        **trainer_kwargs,
    )


def fit_stages(
    module: TwoLevelStrategy,
    datamodule: L.LightningDataModule,
    run_dir: str | Path,
    **trainer_kwargs: Any,
) -> FitResult:
    """Run every stage of ``module``; test each stage's tasks with its best checkpoint."""
    run_dir = Path(run_dir)
    result = FitResult()
    for stage in module.stage_names:
        module.begin_stage(stage)
        config = module.stages[stage]
        trainer = build_trainer(stage, config, run_dir, **trainer_kwargs)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        checkpoint = trainer.checkpoint_callback
        trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)
        outputs = module.test_outputs
        val = trainer.validate(module, datamodule=datamodule, ckpt_path="best", verbose=False)[0]
        val_scores = {
            t: {"macro_f1": float(val[f"val/{t}_f1"]), "accuracy": float(val[f"val/{t}_acc"])}
            for t in module.tasks
        }
        scores = {
            t: score_predictions(outputs.preds[t], outputs.targets[t], module.num_classes[t])
            for t in module.tasks
        }
        for t in module.tasks:
            result.test_outputs.preds[t] = outputs.preds[t]
            result.test_outputs.targets[t] = outputs.targets[t]
            result.test_outputs.probs[t] = outputs.probs[t]
        result.stages.append(
            StageResult(
                name=stage,
                tasks=module.tasks,
                scores=scores,
                val_scores=val_scores,
                best_checkpoint=str(checkpoint.best_model_path),
                best_val_loss=float(checkpoint.best_model_score),
                epochs_run=trainer.current_epoch,
                seconds=seconds,
            )
        )
        log.info("stage %s: %s in %.1f s", stage, scores, seconds)
    return result
