"""``landmark-tl predict run=DIR inputs=PATH_OR_GLOB [top_k=3] [out=CSV]`` (or ``python -m``)

Predicts category and landmark for image files, folders (searched recursively) or globs
with a finished run's model. Prints a table, writes a CSV (default ``<run>/predict.csv``);
unreadable and special files (FIFOs, devices) are listed and skipped; ``top_k`` above the
run's number of landmarks lists them all. An input that matches
nothing, a bad ``top_k`` or an ``out`` folder exits 2 before the model is loaded; nothing is
written unless an image was predicted.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from landmark_tl.core.errors import UsageError
from landmark_tl.core.io import printable
from landmark_tl.data.decode import load_rgb
from landmark_tl.serving.inference import Prediction, TrainedRun


@dataclass
class PredictArgs:
    """The keys of ``landmark-tl predict`` (documented in conf/predict.yaml)."""

    run: str = MISSING
    inputs: Any = MISSING  # a path or glob, or a list of them
    top_k: int = 3
    out: str | None = None


ConfigStore.instance().store(name="predict_schema", node=PredictArgs)


def positive(key: str, value: int) -> int:
    """``value`` when >= 1, else a UsageError naming ``key``."""
    if value < 1:
        raise UsageError(f"{key}={value}: must be a whole number >= 1")
    return value


def output_file(out: str | None, default: Path) -> Path:
    """The ``out=`` file (``default`` when not given); a folder is refused."""
    path = Path(out) if out else default
    if path.is_dir():
        raise UsageError(
            f"out={printable(str(path))} is a folder: give a file path, e.g. "
            f"out={printable(str(path / default.name))}"
        )
    return path


def predict_files(
    run: TrainedRun,
    files: Sequence[Path],
    top_k: int,
    chunk: int = 32,
    open_image: Callable[[Path], BinaryIO] | None = None,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predictions of the readable files; the others with the reason they were skipped.

    ``open_image`` reads an image that is not a plain file (e.g. :meth:`Catalog.open`).
    """
    predictions: list[Prediction] = []
    skipped: list[tuple[Path, str]] = []
    for start in range(0, len(files), chunk):
        images, paths = [], []
        for path in files[start : start + chunk]:
            try:
                if open_image is None:
                    images.append(load_rgb(path))
                else:
                    with open_image(path) as f:
                        images.append(load_rgb(f))
                paths.append(path)
            except Exception as err:  # unreadable, truncated, not an image: list it, go on
                skipped.append((path, f"{type(err).__name__}: {str(err)[:120]}"))
        for prediction, path in zip(run.predict(images, top_k=top_k), paths, strict=True):
            prediction.source = str(path)
            predictions.append(prediction)
    return predictions, skipped


def predictions_csv(predictions: Sequence[Prediction], top_k: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["path", "category", "category_prob", "landmark", "landmark_prob"]
    header += [f"landmark_top{k + 1}" for k in range(top_k)]
    writer.writerow(header)
    for p in predictions:
        tops = [f"{name} ({prob:.3f})" for name, prob in p.top_landmarks]
        writer.writerow(
            [
                p.source,
                p.category,
                f"{p.category_prob:.4f}",
                p.landmark,
                f"{p.landmark_prob:.4f}",
                *tops,
                *[""] * (top_k - len(tops)),
            ]
        )
    return out.getvalue()


def shown_paths(paths: Sequence[str]) -> list[str]:
    """``paths`` relative to the deepest folder holding them all, so images of the same name
    in different folders stay apart (``a/img1.png``, ``b/img1.png``); one file: its name."""
    if not paths:
        return []
    base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), base) for p in paths]


def table(predictions: Sequence[Prediction]) -> str:
    """The predictions as aligned columns, images named as :func:`shown_paths` does."""
    rows = [
        (
            shown,
            p.category,
            f"{p.category_prob:.2f}",
            p.landmark,
            f"{p.landmark_prob:.2f}",
        )
        for p, shown in zip(predictions, shown_paths([p.source for p in predictions]), strict=True)
    ]
    header = ("image", "category", "p", "landmark", "p")
    widths = [max(len(printable(r[i])) for r in [header, *rows]) for i in range(5)]
    lines = [
        "  ".join(printable(c).ljust(w) for c, w in zip(r, widths, strict=True))
        for r in [header, *rows]
    ]
    return "\n".join(lines)
