"""``python -m landmark_tl.train``: compose the config, train a strategy, write the run dir.

From a notebook: ``train(landmark_tl.compose([...]), run_dir)`` does the same.
"""

from __future__ import annotations

import csv
import io
import logging
import secrets
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from landmark_tl.config.lightning import Monitor, build_callbacks, trainer_arguments
from landmark_tl.config.schema import TrainConfig, register_configs, validate_config
from landmark_tl.core.io import atomic_write_json, atomic_write_text, printable
from landmark_tl.core.quiet import notices_in_run_log
from landmark_tl.data.catalog import paused_gc
from landmark_tl.data.datamodule import LandmarkDataModule
from landmark_tl.data.doctor import format_report, inspect_catalog
from landmark_tl.data.longtail import frequency_bucket_scores
from landmark_tl.data.splits import split_sizes, write_split_csv
from landmark_tl.evaluation.hierarchy_metrics import (
    HIERARCHY_TOP_K,
    distances_at_k,
    hierarchy_aware_scores,
    ranked_landmarks,
)
from landmark_tl.evaluation.metrics import hierarchy_scores
from landmark_tl.models.backbone import KEPT_WEIGHTS, Backbone, save_weights_file
from landmark_tl.reporting.plots import write_run_plots
from landmark_tl.reporting.report_html import write_run_page
from landmark_tl.runs.fingerprint import (
    Fingerprint,
    catalog_digest,
    check_run_marker,
    claim_run_dir,
    code_version,
    config_items,
    refuse_changes,
    split_digest,
    write_fingerprint,
)
from landmark_tl.runs.provenance import provenance
from landmark_tl.runs.rundir import BACKBONE_WEIGHTS, FAILED_FILE, RUN_FORMAT, read_metrics
from landmark_tl.runs.runlock import holding_run_dir
from landmark_tl.training.build import build_strategy, prepare_data, training_class_weights
from landmark_tl.training.fit import FitResult, fit_stages
from landmark_tl.training.loggers import RunLoggers, config_params

log = logging.getLogger(__name__)

if not OmegaConf.has_resolver("run_id"):  # run as __main__, this module may be imported again
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
register_configs()


GALLERY_TOP_K = 3  # landmark_top<k> columns of predictions.csv (the report's error gallery)


def predictions_csv(datamodule: LandmarkDataModule, fit: FitResult) -> str:
    """One row per test image: true and predicted labels of each task with its probability,
    then the top landmarks as ``name (prob)``, as ``predict`` writes them."""
    records = datamodule.records("test")
    names = datamodule.hierarchy.names()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    tasks = list(fit.test_outputs.preds)
    distances = landmark_distances(fit, datamodule.hierarchy.parent_tensor())
    top_k = min(GALLERY_TOP_K, len(names["landmark"])) if "landmark" in tasks else 0
    writer.writerow(
        ["path"]
        + [f"{c}_{t}" for t in tasks for c in ("true", "pred", "prob")]
        + [f"landmark_top{k + 1}" for k in range(top_k)]
        + [f"landmark_distance_at_{k}" for k in distances]
    )
    tested = min((len(fit.test_outputs.preds[t]) for t in tasks), default=0)
    if tested < len(records):  # trainer.fast_dev_run or limit_test_batches
        log.warning("the test covered %d of %d test images (trainer limits)", tested, len(records))
    for i, record in enumerate(records[:tested]):
        row = [datamodule.catalog.key(record.path)]
        for t in tasks:
            pred = int(fit.test_outputs.preds[t][i])
            target = int(fit.test_outputs.targets[t][i])
            prob = float(fit.test_outputs.probs[t][i, pred])
            row += [names[t][target], names[t][pred], f"{prob:.4f}"]
        if top_k:
            probs, indices = fit.test_outputs.probs["landmark"][i].topk(top_k)
            row += [
                f"{names['landmark'][int(j)]} ({float(q):.3f})"
                for q, j in zip(probs, indices, strict=True)
            ]
        writer.writerow(row + [f"{d[i]:.4g}" for d in distances.values()])
    return out.getvalue()


def landmark_distances(fit: FitResult, parent: torch.Tensor) -> dict[int, list[float]]:
    """Per test image and k, the mean tree distance of its k top-ranked landmarks to the
    true one (:mod:`landmark_tl.evaluation.hierarchy_metrics`): what the report bootstraps
    mistake severity and distance@k from. Empty without landmark predictions."""
    test = fit.test_outputs
    if "landmark" not in test.preds:
        return {}
    preds, targets, probs = (x["landmark"] for x in (test.preds, test.targets, test.probs))
    return {
        k: distances_at_k(ranked_landmarks(preds, probs, k), targets, parent).tolist()
        for k in HIERARCHY_TOP_K
    }


def training_images_per_landmark(datamodule: LandmarkDataModule) -> torch.Tensor:
    """Number of training images of each landmark index."""
    _, landmarks = datamodule.catalog.labels()
    in_train = [lm for lm, s in zip(landmarks, datamodule.assignment, strict=True) if s == "train"]
    return torch.bincount(
        torch.tensor(in_train, dtype=torch.long), minlength=datamodule.hierarchy.num_landmarks
    )


def run_fingerprint(config: TrainConfig, datamodule: LandmarkDataModule) -> Fingerprint:
    """What determines the results of training ``config`` on the set-up ``datamodule``."""
    catalog = datamodule.catalog
    paths = [catalog.key(r.path) for r in catalog.records]
    data = catalog_digest(
        (p, r.category, r.landmark, d)
        for p, r, d in zip(paths, catalog.records, catalog.content_digests(), strict=True)
    )
    split = split_digest(paths, datamodule.assignment)
    return Fingerprint(config_items(config), data, split, code_version())


@holding_run_dir
@notices_in_run_log
def train(
    config: TrainConfig, run_dir: str | Path, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Train ``config``'s strategy; write split, problems, checkpoints, logs, metrics to run_dir.

    ``overrides`` (the command line's, recorded in metrics.json) let reports tell the
    points of a sweep apart. A run dir holds one run: a new run refuses a dir with another
    run's files, and ``config.resume`` continues a run only with the same fingerprint
    (config, data, split, code). metrics.json is written last, as the mark of a finished run.
    One process at a time runs in a run dir (see landmark_tl.runs.runlock).
    """
    run_dir = Path(run_dir)
    validate_config(config)
    # Data-parallel ranks > 0 start after rank 0 has claimed the dir and written its files.
    recorded = claim_run_dir(run_dir, config, config.resume) if is_rank_zero() else None
    if is_rank_zero():
        (run_dir / FAILED_FILE).unlink(missing_ok=True)  # a failed run resumed tries again
    finished = run_dir / "metrics.json"
    if recorded is not None and finished.is_file():
        log.info("%s finished before (resume=true): keeping its results", run_dir)
        metrics = read_metrics(finished)
        check_run_marker(run_dir, metrics)
        return metrics
    start = time.perf_counter()
    loggers = RunLoggers(  # trackers checked
        config.logger, run_dir, config.paths.output_dir, config_params(config)
    )
    try:
        metrics = _train(config, run_dir, overrides, recorded, loggers, start)
    except BaseException as error:
        loggers.fail()
        if is_rank_zero():
            record_failure(run_dir, error)
        raise
    loggers.finish(metrics, overrides)
    return metrics


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Write why a run stopped to its ``failed.json`` (a multirun goes on to the next job,
    and Hydra shows the error only when the sweep ends) and say so in the run's log."""
    message = f"{type(error).__name__}: {printable(str(error))[:500]}"
    details = {"error": message, "traceback": traceback.format_exc()[-8000:]}
    atomic_write_json(run_dir / FAILED_FILE, details)
    log.error("run failed (%s); details in %s", message, run_dir / FAILED_FILE)


def _train(
    config: TrainConfig,
    run_dir: Path,
    overrides: Sequence[str],
    recorded: Fingerprint | None,
    loggers: RunLoggers,
    start: float,
) -> dict[str, Any]:
    """The run itself, once the config is checked and the trackers are open."""
    backbone, datamodule = prepare_data(config)
    catalog = datamodule.catalog
    with paused_gc():  # a few objects per image: see paused_gc
        fingerprint = run_fingerprint(config, datamodule)
        if recorded is not None:
            refuse_changes(run_dir, recorded.differences(fingerprint))
        if is_rank_zero():  # data-parallel ranks share one run dir; one of them writes
            write_run_setup(run_dir, config, datamodule, fingerprint, backbone)
    setup_seconds = time.perf_counter() - start

    # Seed again: whether features came from the cache must not change the head's init.
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = build_strategy(config, backbone, catalog.hierarchy)
    if config.optim.class_balance:
        module.class_weights = training_class_weights(datamodule)
    fit = fit_stages(
        module,
        datamodule,
        run_dir,
        seed=config.seed,
        resume=config.resume,
        monitor=Monitor.resolve(config.strategy.monitor, config.strategy.monitor_mode),
        loggers=loggers.for_stage,
        callbacks=lambda: build_callbacks(config.callbacks),
        **trainer_arguments(config.trainer, interactive()),
    )
    metrics = run_metrics(config, datamodule, fingerprint, fit, overrides, setup_seconds, start)
    if is_rank_zero():
        write_run_results(run_dir, config, datamodule, fit, metrics)
    return metrics


def write_run_setup(
    run_dir: Path,
    config: TrainConfig,
    datamodule: LandmarkDataModule,
    fingerprint: Fingerprint,
    backbone: Backbone,
) -> None:
    """The files a run writes before training: fingerprint, split, problems, hierarchy,
    config, data report (and a frozen backbone's weights where they are not kept
    elsewhere)."""
    catalog = datamodule.catalog
    write_fingerprint(run_dir, fingerprint)
    write_split_csv(run_dir / "split.csv", catalog, datamodule.assignment)
    catalog.write_problem_report(run_dir / "problems.csv")
    atomic_write_json(run_dir / "hierarchy.json", catalog.hierarchy.to_dict())
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(config)))
    report = inspect_catalog(catalog, config.data.split.to_spec(), config.data.split_file)
    atomic_write_text(run_dir / "data_report.md", format_report(report))
    if backbone.frozen and config.backbone.weights in KEPT_WEIGHTS:
        # checkpoints leave a frozen backbone out: keep its weights for offline loading
        save_weights_file(backbone, run_dir / BACKBONE_WEIGHTS)


def run_metrics(
    config: TrainConfig,
    datamodule: LandmarkDataModule,
    fingerprint: Fingerprint,
    fit: FitResult,
    overrides: Sequence[str],
    setup_seconds: float,
    start: float,
) -> dict[str, Any]:
    """metrics.json of a finished fit (``start``: when the run began, for total_s)."""
    catalog = datamodule.catalog
    sizes = split_sizes(datamodule.assignment)
    test = fit.test_outputs
    metrics = {
        "run_format": RUN_FORMAT,
        "fingerprint": fingerprint.digest,
        "approach": config.strategy.approach,
        "strategy": config.strategy.name,
        "backbone": config.backbone.name,
        "seed": config.seed,
        "overrides": list(overrides),
        "provenance": provenance(str(config.trainer.accelerator)),
        "test": fit.task_scores(),
        "val": fit.task_val_scores(),
        # an empty split is stated, never scored: no validation keeps each stage's last epoch
        "validation": f"best checkpoint by {config.strategy.monitor}"
        if sizes["val"]
        else "none: last epoch kept",
        **averaged_scores(fit),
        "hierarchy": {
            **hierarchy_scores(test.preds, test.targets, catalog.hierarchy.parent_tensor()),
            **hierarchy_aware_scores(
                test.preds["landmark"],
                test.targets["landmark"],
                catalog.hierarchy.parent_tensor(),
                test.probs["landmark"],
            ),
        }
        if sizes["test"]
        else {},
        "frequency_buckets": frequency_bucket_scores(
            training_images_per_landmark(datamodule), test.preds, test.targets
        )
        if sizes["test"]
        else {},
        "data": {
            "source": config.data.source,
            "root": str(catalog.root),
            "images": len(catalog.records),
            "dropped_landmarks": [
                {
                    "category": d.category,
                    "landmark": d.landmark,
                    "images": d.images,
                    "reason": d.reason,
                }
                for d in catalog.dropped
            ],
            "skipped": [{"path": str(p.path), "reason": p.reason} for p in catalog.problems],
            "split": sizes,
        },
        "stages": [
            {
                "name": s.name,
                "tasks": list(s.tasks),
                "epochs": s.epochs_run,
                "best_val_loss": s.best_val_loss,
                "monitor": s.monitor,
                "best_score": s.best_score,
                "best_checkpoint": s.best_checkpoint,
                "seconds": round(s.seconds, 2),
            }
            for s in fit.stages
        ],
        "timings": {
            "setup_s": round(setup_seconds, 2),
            "train_s": round(sum(s.seconds for s in fit.stages), 2),
            "total_s": round(time.perf_counter() - start, 2),
        },
    }
    return metrics


def averaged_scores(fit: FitResult) -> dict[str, Any]:
    """With callbacks=ema: the test and validation scores of the average of the weights
    saved with each stage's kept checkpoint, beside the raw weights' ``test`` and ``val``."""
    test, val = fit.task_scores(ema=True), fit.task_val_scores(ema=True)
    if not test and not val:
        return {}
    return {
        "test_ema": test,
        "val_ema": val,
        "ema": "test/val: the raw weights of each stage's kept checkpoint (what the next "
        "stage, predict and export use); test_ema/val_ema: the average of the weights "
        "saved with that checkpoint",
    }


def write_run_results(
    run_dir: Path,
    config: TrainConfig,
    datamodule: LandmarkDataModule,
    fit: FitResult,
    metrics: dict[str, Any],
) -> None:
    """predictions.csv, the plots and report.html (unless ``extras.plots=false``) and
    metrics.json, last:
    the mark of a finished run."""
    atomic_write_text(run_dir / "predictions.csv", predictions_csv(datamodule, fit))
    if config.extras.plots:
        write_run_plots(run_dir)
        write_run_page(run_dir, metrics)
    atomic_write_json(run_dir / "metrics.json", metrics)


def interactive() -> bool:
    """Whether progress bars help: stderr is a terminal."""
    return sys.stderr.isatty()


def is_rank_zero() -> bool:
    """Whether this process is the first of a data-parallel run (or the only one)."""
    return rank_zero_only.rank == 0


def summary(metrics: dict[str, Any], run_dir: Path) -> str:
    """The lines printed at the end of a run."""
    lines = [
        f"{metrics['approach']} on {metrics['backbone']} "
        f"({metrics['timings']['total_s']:.0f} s, {metrics['data']['images']} images, "
        f"{len(metrics['data']['skipped'])} skipped)"
    ]
    for task, s in metrics["test"].items():
        lines.append(
            f"  test {task:<9} macro F1 {s['macro_f1']:.3f}   accuracy {s['accuracy']:.3f}"
            f"   (n={s['n']})"
        )
    for task, s in metrics.get("test_ema", {}).items():
        lines.append(
            f"  test {task:<9} macro F1 {s['macro_f1']:.3f}   accuracy {s['accuracy']:.3f}"
            "   (average of the weights, callbacks=ema)"
        )
    if not metrics["test"]:
        lines.append("  no test split (data.split.test=0): no test scores")
    if not metrics.get("val"):
        lines.append("  no validation split: each stage kept its last epoch")
    lines.append(f"run dir: {printable(str(run_dir))}")
    return "\n".join(lines)


def metric_at(metrics: dict[str, Any], dotted: str) -> float:
    """The value at a dotted path of metrics.json, e.g. ``val.landmark.macro_f1``."""
    value: Any = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(
                f"optimized_metric={dotted}: metrics.json has no '{key}' there; e.g. "
                "val.landmark.macro_f1, val.category.accuracy, hierarchy.full_path_accuracy"
            )
        value = value[key]
    return float(value)
