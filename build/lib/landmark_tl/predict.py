"""``python -m landmark_tl.predict run=DIR inputs=PATH_OR_GLOB [inputs=...] [top_k=3] [out=CSV]``

Predicts category and landmark for image files, folders (searched recursively) or globs
with a finished run's model. Prints a table, writes a CSV (default ``<run>/predict.csv``);
unreadable and special files (FIFOs, devices) are listed and skipped. An input that matches
nothing, a bad ``top_k`` or an ``out`` folder exits 2 before the model is loaded; nothing is
written unless an image was predicted.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from landmark_tl.data.catalog import IMAGE_EXTENSIONS, CatalogError, load_rgb
from landmark_tl.errors import UsageError, command
from landmark_tl.inference import Prediction, TrainedRun, image_files, load_run
from landmark_tl.io import atomic_write_text, printable

USAGE = "usage: python -m landmark_tl.predict run=DIR inputs=PATH_OR_GLOB [top_k=3] [out=CSV]"


def parse_args(
    argv: Sequence[str],
    keys: Sequence[str] = ("run", "inputs", "top_k", "out"),
    required: Sequence[str] = ("run", "inputs"),
    usage: str = USAGE,
) -> dict[str, list[str]]:
    """``key=value`` arguments (a key may repeat); unknown or missing keys raise UsageError."""
    args: dict[str, list[str]] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            raise UsageError(f"unknown argument {arg!r}\n{usage}")
        args.setdefault(key, []).append(value)
    if any(key not in args for key in required):
        raise UsageError(f"{' and '.join(k + '=' for k in required)} are required\n{usage}")
    return args


def positive_int(args: dict[str, list[str]], key: str, default: int) -> int:
    """The last ``key=`` value as a whole number >= 1, else UsageError naming it."""
    text = args.get(key, [str(default)])[-1]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{key}={text}: must be a whole number >= 1 (e.g. {key}={default})")
    return value


def output_file(args: dict[str, list[str]], default: Path) -> Path:
    """The ``out=`` file (``default`` when not given); a folder is refused."""
    out = Path(args.get("out", [str(default)])[-1])
    if out.is_dir():
        raise UsageError(
            f"out={printable(str(out))} is a folder: give a file path, e.g. "
            f"out={printable(str(out / default.name))}"
        )
    return out


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


def table(predictions: Sequence[Prediction]) -> str:
    rows = [
        (
            Path(p.source).name,
            p.category,
            f"{p.category_prob:.2f}",
            p.landmark,
            f"{p.landmark_prob:.2f}",
        )
        for p in predictions
    ]
    header = ("image", "category", "p", "landmark", "p")
    widths = [max(len(printable(r[i])) for r in [header, *rows]) for i in range(5)]
    lines = [
        "  ".join(printable(c).ljust(w) for c, w in zip(r, widths, strict=True))
        for r in [header, *rows]
    ]
    return "\n".join(lines)


@command
def main(argv: list[str]) -> int:
    """Arguments and inputs are checked before the model is loaded; nothing is written
    unless at least one image was predicted."""
    args = parse_args(argv)
    top_k = positive_int(args, "top_k", 3)
    out = output_file(args, Path(args["run"][-1]) / "predict.csv")
    files, special = image_files(args["inputs"])
    if not files:
        raise UsageError(
            f"no image files in inputs={', '.join(args['inputs'])} (extensions "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); nothing to predict"
        )
    run = load_run(args["run"][-1])
    predictions, skipped = predict_files(run, files, top_k)
    skipped += special
    if not predictions:
        path, reason = skipped[0]
        raise CatalogError(
            f"none of the {len(skipped)} input files could be read (first: "
            f"{printable(str(path))}: {reason}); nothing predicted, nothing written"
        )
    atomic_write_text(out, predictions_csv(predictions, top_k))
    print(table(predictions))
    for path, reason in skipped:
        print(f"skipped {printable(str(path))}: {reason}", file=sys.stderr)
    print(f"{len(predictions)} predicted, {len(skipped)} skipped; CSV: {printable(str(out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
