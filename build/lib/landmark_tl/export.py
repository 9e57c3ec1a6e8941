"""``python -m landmark_tl.export run=DIR format=onnx|torchscript [out=DIR]``

Writes a self-contained model file of a finished run (``model.onnx`` or ``model.pt``) and
``labels.json`` (class names, preprocessing, the model's inputs and outputs). The model
takes uint8 images (N, 3, H, W) already resized and cropped as ``labels.json`` says, and
returns category and landmark probabilities and the decoded class indices (consistent
with the hierarchy for the ``hierarchical`` strategy).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from landmark_tl.errors import UsageError, command
from landmark_tl.inference import TrainedRun, load_run
from landmark_tl.io import atomic_write_json
from landmark_tl.predict import parse_args

USAGE = "usage: python -m landmark_tl.export run=DIR format=onnx|torchscript [out=DIR]"
FORMATS = ("onnx", "torchscript")
OUTPUTS = ("category_probs", "landmark_probs", "category", "landmark")


class Exportable(nn.Module):
    """The run's model as images → (probabilities, decoded indices) per task."""

    def __init__(self, run: TrainedRun) -> None:
        super().__init__()
        self.model = run.model.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(images)
        decoded = self.model.decode(logits)
        return (
            logits["category"].softmax(-1),
            logits["landmark"].softmax(-1),
            decoded["category"],
            decoded["landmark"],
        )


def labels(run: TrainedRun, model_file: str) -> dict:
    """What a consumer of the model file needs to know."""
    return {
        "model": model_file,
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "NCHW, RGB",
            "preprocessing": asdict(run.preprocessing),
            "note": "resize and crop as in preprocessing; normalisation is inside",
        },
        "outputs": list(OUTPUTS),
        "categories": run.hierarchy.category_names,
        "landmarks": run.hierarchy.landmark_names,
        "landmark_to_category": list(run.hierarchy.landmark_to_category),
        "approach": run.metrics.get("approach"),
        "test": run.metrics.get("test"),
    }


def check_format(fmt: str) -> str:
    """``fmt`` if it is an export format, else UsageError."""
    if fmt not in FORMATS:
        raise UsageError(f"format={fmt}: use {' or '.join(FORMATS)}\n{USAGE}")
    return fmt


def export(run: TrainedRun, fmt: str, out_dir: Path) -> Path:
    """Write the model file and labels.json into ``out_dir``; return the model file."""
    check_format(fmt)
    module = Exportable(run)
    example = torch.zeros(2, *run.preprocessing.input_size, dtype=torch.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        path = out_dir / "model.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            input_names=["images"],
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    else:
        path = out_dir / "model.pt"
        run.model._jit_is_scripting = True  # Lightning: let tracing read `trainer` as None
        try:
            with torch.no_grad():
                torch.jit.trace(module, example, check_trace=False).save(str(path))
        finally:
            run.model._jit_is_scripting = False
    atomic_write_json(out_dir / "labels.json", labels(run, path.name))
    return path


@command
def main(argv: list[str]) -> int:
    args = parse_args(argv, ("run", "format", "out"), ("run", "format"), USAGE)
    fmt = check_format(args["format"][-1])
    run = load_run(args["run"][-1])
    out = Path(args.get("out", [str(run.run_dir / "export")])[-1])
    path = export(run, fmt, out)
    print(f"wrote {path} and {out / 'labels.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
