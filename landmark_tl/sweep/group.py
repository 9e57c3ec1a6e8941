"""Run a group of runs whose heads train together, writing each run's own run dir.

Each member's run dir gets the files a separate ``train()`` writes — fingerprint, split,
config, checkpoints (``<stage>-best.ckpt``, ``<stage>-last.ckpt``), ``stages/<stage>.pt``,
``logs/<stage>/metrics.csv``, predictions, plots, metrics.json last — so ``report``,
``load_run``, ``resume`` and sweepers read them as any other run. A member whose loss
diverges is marked failed (``failed.json`` in its run dir) and the others finish.

Resume (``resume=true``): finished members keep their results; finished stages of the
others are restored from ``stages/<stage>.pt``; a stage interrupted mid-way is trained again
from its start, which gives the result of an uninterrupted run (each stage is seeded).
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from landmark_tl.config.schema import TrainConfig, validate_config
from landmark_tl.core.errors import UserError
from landmark_tl.core.hierarchy import TASKS
from landmark_tl.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from landmark_tl.core.threads import torch_threads
from landmark_tl.evaluation.metrics import score_predictions
from landmark_tl.evaluation.registry import registered_metrics
from landmark_tl.models.strategies.base import TwoLevelStrategy
from landmark_tl.models.strategies.linear_probe import ProbeFit
from landmark_tl.models.strategies.stages import TestOutputs
from landmark_tl.runs.fingerprint import check_run_marker, claim_run_dir, refuse_changes
from landmark_tl.runs.rundir import FAILED_FILE, read_metrics
from landmark_tl.runs.runlock import run_dir_lock
from landmark_tl.sweep.group_data import PreparedData, SharedData
from landmark_tl.sweep.grouping import check_group, group_monitor
from landmark_tl.sweep.vectorised import (
    MemberOutcome,
    SplitTensors,
    StageSettings,
    VectorisedStage,
)
from landmark_tl.training.build import build_strategy, training_class_weights
from landmark_tl.training.checkpointing import strip_frozen_backbone
from landmark_tl.training.fit import (
    FitResult,
    StageResult,
    check_stages_fit_split,
    merge_stage,
    restore_stage,
    save_stage,
    split_is_empty,
)
from landmark_tl.training.run import (
    run_fingerprint,
    run_metrics,
    write_run_results,
    write_run_setup,
)

log = logging.getLogger(__name__)
# Groups may train at once in threads (the heads launcher's ``workers``). Everything but
# the arithmetic of a stage holds this lock: seeding and building the members, reading
# the data and writing the run dirs touch process-wide state (torch's global random
# stream, Lightning's seeding); the vectorised loop and the probes' fits use only their
# own random streams, so two groups' loops can run side by side.
SHARED_STATE = threading.Lock()


class MemberFailed(UserError, RuntimeError):
    """One member of a head batch failed (e.g. its loss diverged); the others went on."""


@dataclass
class Member:
    """One run of a group: its config, run dir and command-line overrides."""

    config: TrainConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)


@dataclass
class _State:
    member: Member
    module: TwoLevelStrategy | None = None
    fit: FitResult = field(default_factory=FitResult)
    metrics: dict[str, Any] | None = None
    error: BaseException | None = None
    recorded: Any = None
    fingerprint: Any = None


def run_group(
    members: Sequence[Member],
    device: torch.device | str = "cpu",
    threads: int | None = 1,
    data: SharedData | None = None,
) -> list[dict | BaseException]:
    """Train every member's heads together, on ``threads`` torch threads (see
    :func:`~landmark_tl.core.threads.torch_threads`); per member its metrics, or the
    error that stopped it (the others go on). ``data``: reuse another group's data set-up
    when it reads the same data."""
    configs = [m.config for m in members]
    check_group(configs)
    for config in configs:
        validate_config(config)
    with SHARED_STATE:
        return _run_group(members, device, threads, data or SharedData())


@contextmanager
def _released(lock: threading.Lock) -> Iterator[None]:
    """Let other groups' threads take ``lock`` while this block runs."""
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


def _run_group(
    members: Sequence[Member], device: torch.device | str, threads: int | None, data: SharedData
) -> list[dict | BaseException]:
    start = time.perf_counter()
    states = [_State(m) for m in members]
    with ExitStack() as owned:  # each member's run dir, for as long as the group runs
        for state in states:
            _claim(state, owned)
        _run_claimed(states, device, threads, data, start)
    return [_result(s) for s in states]


def _run_claimed(
    states: list[_State],
    device: torch.device | str,
    threads: int | None,
    data: SharedData,
    start: float,
) -> None:
    pending = [s for s in states if s.metrics is None and s.error is None]
    if not pending:
        return
    prepared = data.get(pending[0].member.config)
    backbone, datamodule = prepared.backbone, prepared.datamodule
    for state in pending:
        config = state.member.config
        state.fingerprint = run_fingerprint(config, datamodule)
        if state.recorded is not None:
            refuse_changes(state.member.run_dir, state.recorded.differences(state.fingerprint))
        write_run_setup(state.member.run_dir, config, datamodule, state.fingerprint, backbone)
    setup_seconds = time.perf_counter() - start
    with torch_threads(threads):
        _fit_group(pending, prepared, device, setup_seconds, start)


def _fit_group(
    pending: list[_State],
    prepared: PreparedData,
    device: torch.device | str,
    setup_seconds: float,
    start: float,
) -> None:
    """Build, train, test and write out every pending member."""
    backbone, datamodule = prepared.backbone, prepared.datamodule
    hierarchy = datamodule.catalog.hierarchy
    for state in pending:
        L.seed_everything(state.member.config.seed, workers=True, verbose=False)
        state.module = build_strategy(state.member.config, backbone, hierarchy)
        check_stages_fit_split(state.module, datamodule)
    class_weights = (
        training_class_weights(datamodule) if pending[0].member.config.optim.class_balance else None
    )
    for state in pending:
        state.module.class_weights = class_weights
    splits = prepared.splits
    validate = not split_is_empty(datamodule, "val")
    for index, stage in enumerate(pending[0].module.stage_names):
        todo = []
        for state in [s for s in pending if s.error is None]:
            state.module.begin_stage(stage)
            saved = state.member.run_dir / "stages" / f"{stage}.pt"
            if state.member.config.resume and saved.exists():
                restore_stage(state.module, state.member.run_dir, saved, state.fit)
            else:
                todo.append(state)
        if todo:
            _train_stage(todo, stage, index, splits, validate, device)
    for state in pending:
        if state.error is not None:
            continue
        config = state.member.config
        state.metrics = run_metrics(
            config,
            datamodule,
            state.fingerprint,
            state.fit,
            state.member.overrides,
            setup_seconds,
            start,
        )
        state.metrics["head_batch"] = {
            "members": len(pending),
            # a probe's fit does not depend on the seed: one fit serves the whole group
            "shared_fit": isinstance(state.module, ProbeFit),
        }
        write_run_results(state.member.run_dir, config, datamodule, state.fit, state.metrics)


def _claim(state: _State, owned: ExitStack) -> None:
    """Lock the member's run dir into ``owned`` and check it may run there."""
    config, run_dir = state.member.config, state.member.run_dir
    try:
        owned.enter_context(run_dir_lock(run_dir))
        state.recorded = claim_run_dir(run_dir, config, config.resume)
    except Exception as error:  # noqa: BLE001 - reported as this member's failure
        state.error = error
        return
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # a failed member resumed tries again
    finished = run_dir / "metrics.json"
    if state.recorded is not None and finished.is_file():
        log.info("%s finished before (resume=true): keeping its results", run_dir)
        state.metrics = read_metrics(finished)
        check_run_marker(run_dir, state.metrics)


def _result(state: _State) -> dict | BaseException:
    return state.error if state.error is not None else state.metrics


def _settings(
    module: TwoLevelStrategy, config: TrainConfig, stage: str, index: int
) -> StageSettings:
    stage_config = module.stages[stage]
    return StageSettings(
        epochs=stage_config.epochs,
        lr=stage_config.lr,
        weight_decay=stage_config.weight_decay,
        patience=stage_config.patience,
        seed=config.seed + index,
        loss_weights={t: module.loss_weight(t) for t in module.stage_tasks(stage)},
        dropout=config.head.dropout if module.takes_head else 0.0,
    )


def _train_stage(
    todo: list[_State],
    stage: str,
    index: int,
    splits: dict[str, SplitTensors],
    validate: bool,
    device: torch.device | str,
) -> None:
    """Fit ``stage`` of every member in ``todo`` at once, then test and save each."""
    modules = [s.module for s in todo]
    configs = [s.member.config for s in todo]
    with _released(SHARED_STATE):
        probed = _fit_probes(modules, splits)
    if probed is not None:
        splits = probed
    vectorised = VectorisedStage(
        modules,
        [_settings(m, c, stage, index) for m, c in zip(modules, configs, strict=True)],
        configs[0].optim,
        configs[0].data.batch_size,
        modules[0].class_weights,
        device,
        group_monitor(configs[0]),
        fitted=probed is not None,
    )
    with _released(SHARED_STATE):
        outcomes, seconds = vectorised.run(splits["train"], splits["val"] if validate else None)
    if probed is not None:  # what a probe logs at the end of its single epoch
        chosen = {
            f"probe/{t}_l2": float(modules[0].chosen_l2[TASKS.index(t)])
            for t in modules[0].probe_layers()
        }
        for outcome in outcomes:
            for row in outcome.rows:
                if "train/loss" in row:
                    row.update(chosen)
    for state, outcome in zip(todo, outcomes, strict=True):
        if outcome.failed is not None:
            state.error = MemberFailed(outcome.failed)
            atomic_write_json(
                state.member.run_dir / FAILED_FILE, {"stage": stage, "error": outcome.failed}
            )
            log.error("%s: %s", state.member.run_dir, state.error)
    kept = [(s, o) for s, o in zip(todo, outcomes, strict=True) if o.failed is None]
    if not kept:
        return
    for state, outcome in kept:  # the chosen weights, for testing
        state.module.load_state_dict(outcome.best_state, strict=False)
    tested = VectorisedStage(
        [s.module for s, _ in kept],
        [vectorised.settings[todo.index(s)] for s, _ in kept],
        configs[0].optim,
        configs[0].data.batch_size,
        modules[0].class_weights,
        device,
    )
    params = tested.stack()
    weights = torch.tensor(
        [[st.loss_weights[t] for t in tested.tasks] for st in tested.settings], device=tested.device
    )
    results = {}
    for split in ("test", "val"):
        data = splits[split]
        if len(data) == 0 or (split == "val" and not validate):
            continue
        logits, preds, total, per_task = tested.evaluate(params, data, weights)
        results[split] = (logits, preds, tested.rows(split, data, preds, total, per_task))
    for m, (state, outcome) in enumerate(kept):
        _finish_stage(state, outcome, stage, m, results, splits, validate, seconds / len(todo))


def _fit_probes(
    modules: list[TwoLevelStrategy], splits: dict[str, SplitTensors]
) -> dict[str, SplitTensors] | None:
    """Probes (None for other strategies): fit the first member's once and give every
    member that fit, then return the splits standardised as the probes' ``encode`` does.

    A probe's fit is a convex problem solved full-batch from zeros on the same features
    whatever the seed, so each member's own fit would be this one; the seed only orders
    the batches of the single epoch that logs the training scores, which each member still
    runs in its own order.
    """
    first = modules[0]
    if not isinstance(first, ProbeFit):
        return None
    width = first.feature_mean.numel()

    def raw(split: SplitTensors) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = split.x if len(split) else torch.zeros(0, width)  # an empty split
        return x, split.targets

    first.fit_probes(raw(splits["train"]), raw(splits["val"]))
    fitted = {k: v for k, v in first.state_dict().items() if not k.startswith("backbone.")}
    for module in modules[1:]:
        module.load_state_dict(fitted, strict=False)
    with torch.no_grad():
        return {
            name: SplitTensors(
                first.encode(raw(split)[0])
                if isinstance(split.x, torch.Tensor)
                else split.x.transformed(first.encode),  # standardised as rows are read
                split.targets,
            )
            for name, split in splits.items()
        }


def _finish_stage(
    state: _State,
    outcome: MemberOutcome,
    stage: str,
    m: int,
    results: dict[str, tuple],
    splits: dict[str, SplitTensors],
    validate: bool,
    seconds: float,
) -> None:
    """One member's stage files (checkpoints, log, saved stage) and results."""
    module, run_dir = state.module, state.member.run_dir
    tasks = module.tasks
    outputs = TestOutputs()
    if "test" in results:
        logits, preds, _ = results["test"]
        outputs = TestOutputs(
            {t: preds[t][m].cpu() for t in tasks},
            {t: splits["test"].targets[t].clone() for t in tasks},
            {t: logits[t][m].float().softmax(-1).cpu() for t in tasks},
        )
    val_row = results["val"][2][m] if "val" in results else None
    result = StageResult(
        name=stage,
        tasks=tasks,
        scores={
            t: score_predictions(
                outputs.preds[t], outputs.targets[t], module.num_classes[t], outputs.probs[t]
            )
            for t in outputs.preds
        },
        val_scores={
            t: {m.field: val_row[f"val/{t}_{m.name}"] for m in registered_metrics()} for t in tasks
        }
        if val_row
        else {},
        best_checkpoint=f"checkpoints/{stage}-best.ckpt",
        best_val_loss=None if val_row is None else val_row["val/loss"],
        epochs_run=outcome.epochs_run,
        seconds=seconds,
        monitor=group_monitor(state.member.config).key if validate else None,
        best_score=outcome.best_score,
    )
    steps_per_epoch = outcome.steps // max(outcome.epochs_run, 1)
    best = _checkpoint(
        module, outcome.best_epoch or 0, (outcome.best_epoch or 0) + 1, steps_per_epoch
    )
    module.load_state_dict(outcome.last_state, strict=False)
    last = _checkpoint(module, outcome.epochs_run - 1, outcome.epochs_run, steps_per_epoch)
    module.load_state_dict(outcome.best_state, strict=False)  # the stage ends on its best
    rows = list(outcome.rows)
    final = {"epoch": outcome.epochs_run, "step": outcome.steps}
    if "test" in results:
        rows.append({**final, **results["test"][2][m]})
    if val_row is not None:
        rows.append({**final, **val_row})
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "checkpoints" / f"{stage}-best.ckpt", best)
    atomic_write_text(run_dir / "logs" / stage / "metrics.csv", _csv(rows))
    save_stage(run_dir / "stages" / f"{stage}.pt", result, outputs)
    atomic_write_bytes(run_dir / "checkpoints" / f"{stage}-last.ckpt", last)
    merge_stage(state.fit, result, outputs)
    log.info("%s stage %s: %s", run_dir, stage, result.scores)


def _checkpoint(
    module: TwoLevelStrategy, epoch: int, epochs_done: int, steps_per_epoch: int
) -> bytes:
    """A checkpoint as Lightning's ModelCheckpoint writes it, for what this framework reads
    (state dict without the frozen backbone, which backbone it was, epoch and step)."""
    checkpoint: dict[str, Any] = {
        "epoch": epoch,
        "global_step": epochs_done * steps_per_epoch,
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(strip_frozen_backbone(checkpoint, module.backbone), buffer)
    return buffer.getvalue()


def _csv(rows: list[dict[str, Any]]) -> str:
    """Rows as Lightning's CSVLogger writes them: epoch, step, then sorted metric names."""
    names = sorted({k for row in rows for k in row} - {"epoch", "step"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch", "step", *names], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
