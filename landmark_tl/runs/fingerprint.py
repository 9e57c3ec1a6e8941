"""A run's fingerprint: everything that determines its results, recorded in its run dir.

``fingerprint.json`` holds the composed config (less the keys that only change where or how
visibly a run works, not what it computes), a digest of the data catalog (every image's path,
labels and content digest), a digest of the split and the code version. ``resume=true``
continues a run only when the fingerprint is the same; a new run never writes into a dir
that holds another run's files. ``metrics.json`` is written last and carries the digest, so
a reader can tell a finished, consistent run dir from a half-written or mixed one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import atomic_write_json, printable
from landmark_tl.core.version import __version__
from landmark_tl.runs.layout import BACKBONE_WEIGHTS

FILENAME = "fingerprint.json"
FORMAT = 1

# Keys that change where files go, what is printed or how fast, never a result. Where the
# images and the split file lie is not part of it either: their content is (data, split).
COSMETIC_KEYS = frozenset(
    {
        "resume",
        "data.root",
        "data.manifest",
        "data.hierarchy",
        "data.split_file",
        "optimized_metric",
        "paths.output_dir",
        "paths.cache_dir",
        "features.cache",
        "features.batch_size",
        "extras.plots",
        "features.memory_mb",
        "trainer.enable_progress_bar",
        "trainer.log_every_n_steps",
        "trainer.channels_last",  # memory layout: float rounding only, as features.batch_size
    }
)
# Groups that only record or show a run (trackers), whatever their keys.
COSMETIC_PREFIXES = ("logger.", "extras.")
# What a run dir holds once a run has started in it (Hydra's .hydra/ and logs are not ours).
RUN_FILES = (
    FILENAME,
    "metrics.json",
    "split.csv",
    "hierarchy.json",
    "config.yaml",
    "predictions.csv",
    "checkpoints",
    "stages",
    BACKBONE_WEIGHTS,
)
_SHOWN_KEYS = 8


class RunDirError(UserError, ValueError):
    """A run dir cannot be used as asked; the message names the dir, the keys and the fix."""


@dataclass(frozen=True)
class Fingerprint:
    """What determines a run's results; ``digest`` identifies the whole."""

    config: dict[str, Any]
    data: str | None
    split: str | None
    code: dict[str, str | None]

    @property
    def digest(self) -> str:
        return _digest_of(json.dumps(self.to_dict(with_digest=False), sort_keys=True))

    def to_dict(self, with_digest: bool = True) -> dict[str, Any]:
        body = {
            "format": FORMAT,
            "config": self.config,
            "data": self.data,
            "split": self.split,
            "code": self.code,
        }
        return {**body, "digest": self.digest} if with_digest else body

    def differences(self, other: Fingerprint, *, data: bool = True) -> list[str]:
        """``key: recorded → now`` lines where ``other`` (now) differs from this (recorded)."""
        lines = [
            f"{key}: {_shown_key(self.config, key)} → {_shown_key(other.config, key)}"
            for key in sorted(set(self.config) | set(other.config))
            if self.config.get(key) != other.config.get(key)
        ]
        lines += [
            f"code.{key}: {_show(self.code.get(key))} → {_show(other.code.get(key))}"
            for key in sorted(set(self.code) | set(other.code))
            if self.code.get(key) != other.code.get(key)
        ]
        if data and self.data != other.data:
            lines.append("data: images were added, removed, relabelled or changed in content")
        if data and self.split != other.split:
            lines.append("split: images moved between train, val and test")
        return lines


# config_items of the configs seen last, by their repr (a dataclass's repr shows every
# field, so equal reprs mean equal items): a heads-launcher multirun asks for each job's
# items three times (grouping, checking the group, the run's fingerprint), and building
# them through OmegaConf costs about 0.1 s each on a busy machine.
_ITEMS_SEEN: dict[str, dict[str, Any]] = {}
_ITEMS_KEPT = 64
_ITEMS_LOCK = threading.Lock()  # the heads launcher's batches run in threads


def config_items(config: Any) -> dict[str, Any]:
    """The config as flat ``dotted.key → value`` pairs, cosmetic keys left out."""
    key = repr(config)
    with _ITEMS_LOCK:
        if key not in _ITEMS_SEEN:
            container = OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)
            if len(_ITEMS_SEEN) >= _ITEMS_KEPT:
                del _ITEMS_SEEN[next(iter(_ITEMS_SEEN))]
            _ITEMS_SEEN[key] = {
                k: v
                for k, v in _flatten(container)
                if k not in COSMETIC_KEYS and not k.startswith(COSMETIC_PREFIXES)
            }
        return copy.deepcopy(_ITEMS_SEEN[key])


def _flatten(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def catalog_digest(rows: Iterable[tuple[str, str, str, str]]) -> str:
    """Digest of (relative path, category, landmark, content digest) rows, order-free."""
    return _digest_of("\n".join(sorted("\t".join(row) for row in rows)))


def split_digest(paths: Sequence[str], assignment: Sequence[str]) -> str:
    """Digest of which image is in which split, order-free."""
    return _digest_of(
        "\n".join(sorted(f"{p}\t{s}" for p, s in zip(paths, assignment, strict=True)))
    )


def _digest_of(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


@cache
def code_version() -> dict[str, str | None]:
    """The package version, and the git commit when running from a checkout."""
    package = Path(__file__).resolve().parents[1]
    commit = None
    if (package.parent / ".git").exists():
        try:
            done = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=package.parent,
                capture_output=True,
                text=True,
                timeout=10,
            )
            commit = (done.stdout.strip() or None) if done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"landmark_tl": __version__, "git": commit}


def read_fingerprint(run_dir: Path) -> Fingerprint | None:
    """The recorded fingerprint, None when there is none; RunDirError when it is damaged."""
    path = run_dir / FILENAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
        recorded = Fingerprint(data["config"], data["data"], data["split"], data["code"])
        intact = recorded.digest == data["digest"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{_path(path)}: unreadable ({error}); the run dir is damaged") from error
    if not intact:
        raise RunDirError(f"{_path(path)}: its digest does not match its content; it was edited")
    return recorded


def write_fingerprint(run_dir: Path, fingerprint: Fingerprint) -> None:
    atomic_write_json(run_dir / FILENAME, fingerprint.to_dict())


def claim_run_dir(run_dir: Path, config: Any, resume: bool) -> Fingerprint | None:
    """Check that a run with ``config`` may use ``run_dir``, before any work is done.

    Returns the recorded fingerprint when resuming (its config and code already match),
    None for a fresh start. A new run refuses a dir that holds another run's files; a
    resumed one refuses a different config or code, naming the differing keys.
    """
    recorded = read_fingerprint(run_dir)
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not resume and present:
        raise RunDirError(
            f"{_path(run_dir)} already holds a run ({', '.join(present[:3])}, ...): pass "
            "resume=true to continue that run, or give a new dir (hydra.run.dir=...) or "
            "remove this one"
        )
    if resume and recorded is None and present:
        raise RunDirError(
            f"{_path(run_dir)}: holds run files ({', '.join(present[:3])}) but no {FILENAME} "
            "(an older landmark_tl, or a damaged run): it cannot be checked, so it is not "
            "resumed; start it again in a new dir"
        )
    if recorded is not None:
        now = Fingerprint(config_items(config), None, None, code_version())
        refuse_changes(run_dir, recorded.differences(now, data=False))
    return recorded


def refuse_changes(run_dir: Path, differences: Sequence[str]) -> None:
    """RunDirError listing what differs from the run recorded in ``run_dir``, if anything."""
    if not differences:
        return
    shown = "\n  ".join(differences[:_SHOWN_KEYS])
    more = (
        f"\n  ... and {len(differences) - _SHOWN_KEYS} more"
        if len(differences) > _SHOWN_KEYS
        else ""
    )
    raise RunDirError(
        f"resume=true: {_path(run_dir)} was run with another setup (recorded → now):\n  "
        f"{shown}{more}\nResume with the run's own settings (see its config.yaml), or start "
        "a new run in a new dir."
    )


def check_run_marker(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Refuse a run dir whose metrics.json is not from the run its files belong to."""
    expected = metrics.get("fingerprint")
    if expected is None:  # written before fingerprints existed: nothing to check against
        return
    recorded = read_fingerprint(run_dir)
    if recorded is None or recorded.digest != expected:
        raise RunDirError(
            f"{_path(run_dir)}: metrics.json belongs to another run than the files beside it "
            "(fingerprint.json differs or is missing); the dir is inconsistent: train again "
            "in a new dir"
        )


def _shown_key(config: Mapping[str, Any], key: str) -> str:
    """The value of ``key``, or that the config has no such key (a key of an older schema,
    e.g. another data source's keys in the flat ``data`` group of earlier versions)."""
    return _show(config[key]) if key in config else "(no such key)"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return printable(text if len(text) <= 60 else text[:57] + "...")


def _path(path: Path) -> str:
    return printable(str(path))
