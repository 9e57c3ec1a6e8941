"""``landmark-tl predict``: the command line of :mod:`landmark_tl.serving.predict`."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from landmark_tl.commands.cli import as_list, hydra_app
from landmark_tl.core.errors import UsageError
from landmark_tl.core.io import atomic_write_text, printable
from landmark_tl.data.records import IMAGE_EXTENSIONS, CatalogError
from landmark_tl.serving.inference import image_files, load_run
from landmark_tl.serving.predict import (
    PredictArgs,
    output_file,
    positive,
    predict_files,
    predictions_csv,
    table,
)


@hydra_app("predict")
def main(cfg: DictConfig) -> None:
    """Arguments and inputs are checked before the model is loaded; nothing is written
    unless at least one image was predicted."""
    args: PredictArgs = OmegaConf.to_object(cfg)
    top_k = positive("top_k", args.top_k)
    out = output_file(args.out, Path(args.run) / "predict.csv")
    inputs = as_list(args.inputs)
    files, special = image_files(inputs)
    if not files:
        raise UsageError(
            f"no image files in inputs={', '.join(inputs)} (extensions "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); nothing to predict"
        )
    run = load_run(args.run)
    top_k = min(top_k, run.hierarchy.num_landmarks)  # no columns for landmarks not there
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


if __name__ == "__main__":
    sys.exit(main())
