"""Use a finished run: ``load_run(run_dir).predict(images)``, no Hydra needed.

A :class:`TrainedRun` holds the run's config, label hierarchy, metrics, preprocessing and
its final model (the best checkpoint of the last stage; under ``head_swap`` with the
default ``train_in_stage2=[head]`` and under ``feature_chain`` that model still gives the
first task's predictions of stage 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from landmark_tl.config.schema import BackboneConfig, TrainConfig, to_train_config
from landmark_tl.core.errors import UsageError, UserError
from landmark_tl.core.hierarchy import TASKS, LabelHierarchy
from landmark_tl.core.io import not_regular_reason, printable, special_file_kind
from landmark_tl.data.decode import load_rgb
from landmark_tl.data.transforms import geometry_transform, to_uint8_tensor
from landmark_tl.models.backbone import KEPT_WEIGHTS, WeightsSource
from landmark_tl.models.strategies import TwoLevelStrategy
from landmark_tl.runs.rundir import (
    BACKBONE_WEIGHTS,
    RUN_FORMAT,
    MalformedRunError,
    read_json,
    read_metrics,
    run_format,
)

ImageInput = str | Path | Image.Image | torch.Tensor


@dataclass
class Prediction:
    """One image's predictions; ``top_*`` list (name, probability), most likely first."""

    source: str
    category: str
    category_prob: float
    landmark: str
    landmark_prob: float
    top_categories: list[tuple[str, float]] = field(default_factory=list)
    top_landmarks: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class TrainedRun:
    """A finished run, ready to predict."""

    run_dir: Path
    config: TrainConfig
    hierarchy: LabelHierarchy
    metrics: dict[str, Any]
    model: TwoLevelStrategy

    @property
    def preprocessing(self):
        return self.model.backbone.preprocessing

    def to_tensor(self, image: ImageInput) -> torch.Tensor:
        """An input as a uint8 (3, H, W) tensor at the model's geometry. A tensor input is a
        raw RGB image, (3, H, W) uint8 or float in [0, 1], resized like a file would be."""
        if isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) image tensor, got {tuple(image.shape)}")
            image = Image.fromarray(_as_uint8(image).permute(1, 2, 0).numpy())
        elif not isinstance(image, Image.Image):
            image = load_rgb(image)
        return to_uint8_tensor(geometry_transform(self.preprocessing)(image.convert("RGB")))

    @torch.no_grad()
    def predict(
        self, images: ImageInput | Sequence[ImageInput], top_k: int = 3, batch_size: int = 32
    ) -> list[Prediction]:
        """Category and landmark of each image, with probabilities and the top ``top_k``."""
        single = isinstance(images, str | Path | Image.Image) or (
            isinstance(images, torch.Tensor) and images.ndim == 3
        )
        items = [images] if single else list(images)
        predictions: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = torch.stack([self.to_tensor(item) for item in chunk])
            predictions += self._predict_batch(batch, [_describe(i) for i in chunk], top_k)
        return predictions

    def _predict_batch(
        self, batch: torch.Tensor, sources: list[str], top_k: int
    ) -> list[Prediction]:
        logits = self.model(batch)
        chosen = self.model.decode(logits)
        probs = {task: value.float().softmax(-1) for task, value in logits.items()}
        names = self.hierarchy.names()
        out = []
        for i, source in enumerate(sources):
            top = {
                task: [
                    (names[task][j], float(p))
                    for p, j in zip(
                        *probs[task][i].topk(min(top_k, probs[task].shape[1])), strict=True
                    )
                ]
                for task in TASKS
            }
            c, lm = int(chosen["category"][i]), int(chosen["landmark"][i])
            out.append(
                Prediction(
                    source,
                    names["category"][c],
                    float(probs["category"][i, c]),
                    names["landmark"][lm],
                    float(probs["landmark"][i, lm]),
                    top["category"],
                    top["landmark"],
                )
            )
        return out


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image.cpu()
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def _describe(item: ImageInput) -> str:
    return str(item) if isinstance(item, str | Path) else type(item).__name__


def read_run_config(run_dir: Path, written_format: int = RUN_FORMAT) -> TrainConfig:
    """The run's resolved config (``config.yaml``, else Hydra's ``.hydra/config.yaml``) of
    a run written in run format ``written_format``; a config this version cannot read is a
    MalformedRunError naming the file and both formats."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            try:
                return to_train_config(OmegaConf.load(path))
            except (UserError, OmegaConfBaseException) as error:
                raise MalformedRunError(
                    f"{printable(str(path))}: does not match this landmark_tl's config (run "
                    f"format {written_format}; this landmark_tl writes run format {RUN_FORMAT}): "
                    f"{error}; train the run again, or load it with the landmark_tl version "
                    "that wrote it"
                ) from error
    raise MalformedRunError(
        f"{printable(str(run_dir / 'config.yaml'))}: missing; is it a landmark_tl run dir?"
    )


def finished_run_dir(run_dir: Path) -> Path:
    """``run_dir`` if it holds a finished run (metrics.json), else MalformedRunError saying
    what it is instead: missing, a multirun folder, or a run that did not finish."""
    shown = printable(str(run_dir))
    if (run_dir / "metrics.json").is_file():
        return run_dir
    if not run_dir.is_dir():
        raise MalformedRunError(f"run={shown}: no such folder; give the dir of a finished run")
    runs = sorted(
        (d for d in run_dir.iterdir() if (d / "metrics.json").is_file()),
        key=lambda d: (len(d.name), d.name),  # numbered runs in numeric order
    )
    if runs or (run_dir / "multirun.yaml").is_file():
        example = f", e.g. run={printable(str(runs[0]))}" if runs else ""
        raise MalformedRunError(
            f"run={shown}: this is a multirun folder: pick one of its numbered runs{example}"
        )
    raise MalformedRunError(
        f"run={shown}: no metrics.json: the run did not finish, or this is not a landmark_tl "
        "run dir; give a finished run's dir, or finish it with resume=true"
    )


def _run_file(run_dir: Path, name: str) -> Path:
    """A file the finished run must hold, or MalformedRunError naming it."""
    path = run_dir / name
    if not path.is_file():
        raise MalformedRunError(
            f"{printable(str(path))}: missing from the finished run; the run dir is "
            "incomplete: restore the file or train the run again"
        )
    return path


def backbone_to_load(
    config: TrainConfig, checkpoint: dict[str, Any], run_dir: Path, metrics: dict[str, Any]
) -> BackboneConfig:
    """The backbone settings that rebuild the run's backbone without the network: a
    checkpoint that holds the backbone's weights needs only its architecture (weights=none);
    a frozen hub or file backbone loads from the copy the run kept (BACKBONE_WEIGHTS), or,
    in a run without one, from its original file, named when it is missing."""
    backbone = config.backbone
    if "frozen_backbone" not in checkpoint:  # the weights are in the checkpoint
        return replace(backbone, weights=WeightsSource.none, weights_file=None)
    if backbone.weights not in KEPT_WEIGHTS:  # package (offline) or none (seeded)
        return backbone
    kept = run_dir / BACKBONE_WEIGHTS
    if kept.is_file():
        return replace(backbone, weights=WeightsSource.file, weights_file=str(kept))
    if backbone.weights is WeightsSource.file and Path(backbone.weights_file or "").is_file():
        return backbone
    need = (
        f"backbone.weights_file={backbone.weights_file}"
        if backbone.weights is WeightsSource.file
        else f"the hub weights of {backbone.name} (in the Hugging Face cache, HF_HUB_OFFLINE=1)"
    )
    if run_format(metrics) < 2 and backbone.weights is WeightsSource.hub:
        return backbone  # written before runs kept the weights: the hub (or its cache) it is
    raise MalformedRunError(
        f"{printable(str(kept))}: missing, and the run's frozen backbone was loaded from "
        f"{need}, which is not there either: restore {BACKBONE_WEIGHTS} into the run dir "
        "or provide that file"
    )


def load_run(run_dir: str | Path) -> TrainedRun:
    """Rebuild a finished run's model from its dir (config, hierarchy, last best checkpoint);
    a dir that is not a complete finished run raises MalformedRunError naming the file."""
    from landmark_tl.runs.fingerprint import check_run_marker
    from landmark_tl.training.build import build_backbone, build_strategy
    from landmark_tl.training.checkpointing import restore_frozen_backbone
    from landmark_tl.training.fit import read_checkpoint

    run_dir = finished_run_dir(Path(run_dir))
    metrics = read_metrics(run_dir / "metrics.json")
    check_run_marker(run_dir, metrics)
    config = read_run_config(run_dir, run_format(metrics))
    hierarchy_path = _run_file(run_dir, "hierarchy.json")
    try:
        hierarchy = LabelHierarchy.from_dict(read_json(hierarchy_path))
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedRunError(f"{printable(str(hierarchy_path))}: {error!r}") from error
    last_stage = metrics["stages"][-1]["name"]
    checkpoint_path = _run_file(run_dir, f"checkpoints/{last_stage}-best.ckpt")
    try:
        checkpoint = read_checkpoint(checkpoint_path)
    except RuntimeError as error:  # damaged: read_checkpoint's message names the file
        raise MalformedRunError(str(error)) from error
    L.seed_everything(config.seed, verbose=False)  # a weights=none backbone is seeded
    backbone = build_backbone(
        replace(config, backbone=backbone_to_load(config, checkpoint, run_dir, metrics))
    )
    model = build_strategy(config, backbone, hierarchy)
    model.begin_stage(last_stage)
    model.load_state_dict(restore_frozen_backbone(checkpoint, backbone)["state_dict"])
    return TrainedRun(run_dir, config, hierarchy, metrics, model.eval())


class NoImagesError(UsageError, FileNotFoundError):
    """Inputs to predict that name no file."""


def image_files(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files named, image files inside folders (recursively), and glob matches, sorted and
    unique; and the special files among them (FIFO, socket, device) with why they are
    skipped: they are never opened. NoImagesError names inputs that match nothing."""
    from glob import glob

    from landmark_tl.data.records import IMAGE_EXTENSIONS

    found: set[Path] = set()
    skipped: dict[Path, str] = {}
    unmatched = []
    for item in map(str, inputs):
        # a name glob would misread (e.g. with brackets) still counts when it exists
        matches = glob(item, recursive=True) or ([item] if os.path.lexists(item) else [])
        if not matches:
            unmatched.append(item)
        for path in map(Path, matches):
            candidates = (
                [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
                if path.is_dir()
                else [path]
            )
            for candidate in candidates:
                kind = _special_kind(candidate)
                if kind is not None:
                    skipped[candidate] = not_regular_reason(kind)
                elif not candidate.is_dir():
                    found.add(candidate)
    if unmatched:
        raise NoImagesError(
            "no file or folder matches inputs="
            + ", inputs=".join(printable(i) for i in unmatched)
            + ": check the path (quote a glob so that the shell leaves it to predict)"
        )
    return sorted(found), sorted(skipped.items())


def _special_kind(path: Path) -> str | None:
    try:
        return special_file_kind(path.stat().st_mode)
    except OSError:  # dangling link, no permission: reading it reports why
        return None
