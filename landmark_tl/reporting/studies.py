"""Which runs a report may compare: studies, the rows of a study, and runs listed apart.

A *study* is a set of runs whose test scores answer one question: the same images (the
catalog's content digest; the data source and root for runs without a fingerprint), the
same split design (``data.split.*`` less its seed, and the split file's content when one
is used), the same backbone and weights. Runs on different split seeds of one design are
one study: the report pools them, the split being a level of its bootstrap.

Within a study, the runs of one *row* are those of one approach with the same settings,
seeds aside. A row is named by its approach and the keys whose values differ between that
approach's rows. Keys that cannot change a result never make a row: those the run's
fingerprint leaves out (``fingerprint.COSMETIC_KEYS``; every ``logger.*`` and ``extras.*``
key; ``paths.*``; ``resume``), Hydra's own keys (launcher, sweeper, run dir) and the ones
in :data:`NO_RESULT_KEYS` / :data:`NO_RESULT_PREFIXES` below. That is the one list.

Runs that are not scored are listed apart: debug runs (``debug=...``, or a Trainer limit
such as ``fast_dev_run``), failed runs (``failed.json``), unfinished runs, unreadable runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from landmark_tl.core.io import printable
from landmark_tl.runs.fingerprint import (
    COSMETIC_KEYS,
    COSMETIC_PREFIXES,
    RunDirError,
    read_fingerprint,
)
from landmark_tl.runs.rundir import Run, collect_runs

# Beyond the fingerprint's cosmetic keys: keys that change how a run is watched or which
# device computes it (float rounding only, like trainer.channels_last), never its result.
NO_RESULT_KEYS = frozenset({"trainer.accelerator", "trainer.compile"})
NO_RESULT_PREFIXES = (
    *COSMETIC_PREFIXES,
    "paths.",
    "hydra.",
    "hydra/",
    "callbacks.lr_monitor",
    "callbacks.model_summary",
    "callbacks.rich_progress_bar",
    "callbacks.device_stats",
)
# Pooled, not ignored: training seeds within a row, split seeds within a study.
SEED_KEYS = ("seed", "data.split.seed")
# Trainer keys that make a run a debug run (a partial pass: its scores mean nothing).
DEBUG_TRAINER_KEYS = (
    "fast_dev_run",
    "overfit_batches",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
)


def ignored(key: str) -> bool:
    """Whether ``key`` cannot change a result (so never tells rows apart)."""
    key = key.lstrip("+~")
    return key in COSMETIC_KEYS or key in NO_RESULT_KEYS or key.startswith(NO_RESULT_PREFIXES)


def _parse_override(override: str) -> tuple[str, Any]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def run_settings(run: Run) -> dict[str, Any]:
    """The run's settings as flat ``key → value``: its fingerprint's config (every composed
    key), or for a run without one the command-line overrides of metrics.json."""
    fingerprint = _fingerprint(run)
    if fingerprint is not None:
        return dict(fingerprint.config)
    return dict(_parse_override(o) for o in run.overrides)


def _fingerprint(run: Run) -> Any:
    try:
        return read_fingerprint(run.directory)
    except RunDirError:  # collect_runs already refused a damaged one; an older run has none
        return None


def debug_reason(run: Run) -> str | None:
    """Why ``run`` is a debug run (``debug=fdr``, ``trainer.fast_dev_run=True``), else None."""
    for override in run.overrides:
        if override.lstrip("+").startswith("debug="):
            return override.lstrip("+")
    for key, value in run_settings(run).items():
        name = key.rpartition(".")[2]
        active = value not in (None, False, 0, 1.0, "1.0", "False", "false", "0")
        if key.startswith("trainer.") and name in DEBUG_TRAINER_KEYS and active:
            return f"{key}={value}"
    return None


def _split_file(run: Run) -> bool:
    """Whether the run's split came from a file (config.yaml's ``data.split_file``)."""
    path = run.directory / "config.yaml"
    if not path.is_file():
        return any(o.startswith("data.split_file=") for o in run.overrides)
    return OmegaConf.select(OmegaConf.load(path), "data.split_file") is not None


def study_key(run: Run) -> dict[str, Any]:
    """What defines the study of ``run`` (see the module docstring)."""
    settings = run_settings(run)
    data = run.metrics.get("data", {})
    fingerprint = _fingerprint(run)
    key: dict[str, Any] = {
        "source": data.get("source"),
        "data": fingerprint.data if fingerprint is not None else data.get("root"),
        "split": {
            k: v for k, v in settings.items() if k.startswith("data.split.") and k not in SEED_KEYS
        },
        "backbone": settings.get("backbone.name", run.metrics.get("backbone")),
        "weights": settings.get("backbone.weights"),
        "weights_file": settings.get("backbone.weights_file"),
    }
    if fingerprint is not None and _split_file(run):
        key["split_file"] = fingerprint.split  # a split file fixes the test set itself
    return key


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()


@dataclass
class Study:
    """The scored runs of one study; ``id`` is a short digest of its key."""

    id: str
    key: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    def describe(self) -> str:
        """One line: data, split design, backbone and weights, run count."""
        first = self.runs[0].metrics.get("data", {})
        split = " ".join(
            f"{k.removeprefix('data.split.')}={v}" for k, v in self.key["split"].items()
        )
        data = str(self.key["data"] or "?")
        digest = f", data {data[:8]}" if data != first.get("root") else ""
        weights = self.key["weights"] or "?"
        if self.key.get("weights_file"):
            weights += f" {self.key['weights_file']}"
        runs = len(self.runs)
        return printable(
            f"{self.key['source'] or 'data'} `{first.get('root', '?')}` ({first.get('images', '?')}"
            f" images{digest}); split {split or 'as recorded'}"
            f"{' from a split file' if 'split_file' in self.key else ''}; "
            f"backbone {self.key['backbone']} (weights {weights}); {runs} run{'s' * (runs != 1)}"
        )


@dataclass
class Inventory:
    """Everything read below the inputs: studies of scored runs, and runs listed apart."""

    inputs: tuple[Path, ...]
    studies: list[Study]
    debug: list[str]
    failed: list[str]
    unfinished: list[str]
    unreadable: list[str]

    @property
    def not_scored(self) -> dict[str, list[str]]:
        """Runs listed apart, by why."""
        return {
            "debug runs": self.debug,
            "failed runs": self.failed,
            "unfinished runs": self.unfinished,
            "unreadable runs": self.unreadable,
        }

    def read_lines(self) -> list[str]:
        """Markdown lines saying what the report read, and what it did not score."""
        scored = sum(len(s.runs) for s in self.studies)
        inputs = ", ".join(f"`{printable(str(p))}`" for p in self.inputs)
        studies = len(self.studies)
        lines = [
            f"Read {inputs}: {scored} finished run{'s' * (scored != 1)} in {studies} "
            f"stud{'ies' if studies != 1 else 'y'}."
        ]
        for name, items in self.not_scored.items():
            if items:
                lines += ["", f"Not scored, {name}:", *(f"- {item}" for item in items)]
        return lines


def take_inventory(paths: Iterable[str | Path]) -> Inventory:
    """Load the runs below ``paths``, put debug runs apart and group the rest by study."""
    inputs = tuple(Path(p) for p in paths)
    runs, skipped = collect_runs(inputs)
    studies: dict[str, Study] = {}
    debug = []
    for run in runs:
        reason = debug_reason(run)
        if reason is not None:
            debug.append(f"skipped run {printable(str(run.directory))}: debug run ({reason})")
            continue
        key = study_key(run)
        studies.setdefault(_digest(key), Study(_digest(key), key)).runs.append(run)
    failed = [line for line in skipped if ": failed" in line]
    unfinished = [line for line in skipped if ": unfinished" in line]
    unreadable = [line for line in skipped if line not in failed and line not in unfinished]
    ordered = sorted(studies.values(), key=lambda s: (-len(s.runs), s.id))
    return Inventory(inputs, ordered, debug, failed, unfinished, unreadable)


def _value(value: Any) -> str:
    """A value as an override would write it (``[3,64,64]``, ``0.001``, ``none``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def row_groups(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """The runs of one study grouped into rows, named by approach and differing keys."""
    settings = {
        run.directory: {
            k: _value(v)
            for k, v in run_settings(run).items()
            if not ignored(k)
            and k not in SEED_KEYS
            and not k.startswith(("experiment", "sweep"))
            and k not in ("approach", "debug")
        }
        for run in runs
    }
    by_approach: dict[str, list[Run]] = {}
    for run in runs:
        by_approach.setdefault(run.approach, []).append(run)
    groups: dict[str, list[Run]] = {}
    for approach, members in by_approach.items():
        # the strategy's own keys first, then the rest (head, optim, data ...), by name
        keys = sorted(
            {k for run in members for k in settings[run.directory]},
            key=lambda k: (not k.startswith("strategy."), k),
        )
        differing = [k for k in keys if len({settings[r.directory].get(k) for r in members}) > 1]
        for run in members:
            own = settings[run.directory]
            label = " ".join([approach, *(f"{k}={own[k]}" for k in differing if k in own)])
            groups.setdefault(label, []).append(run)
    return groups


def select(inventory: Inventory, study: str | None) -> list[Study]:
    """The studies to report: the only one, ``all``, or the one whose id starts with
    ``study``; ValueError listing the studies and how to pick one otherwise."""
    studies = inventory.studies
    if study == "all" or (study is None and len(studies) <= 1):
        return studies
    if study is not None:
        chosen = [s for s in studies if s.id.startswith(study)]
        if len(chosen) == 1:
            return chosen
    listing = "\n".join(f"  study={s.id}: {s.describe()}" for s in studies)
    what = f"study={study} names none of them" if study is not None else "they cannot be pooled"
    raise ValueError(
        f"the runs belong to {len(studies)} studies (data, split design or backbone differ); "
        f"{what}:\n{listing}\nPick one with study=<id>, or study=all for one report per "
        "study (each in a folder named by its id under out=)"
    )
