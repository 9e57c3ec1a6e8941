"""``landmark-tl export run=DIR format=onnx|torchscript [out=DIR]`` (or ``python -m``)

Writes a self-contained model file of a finished run (``model.onnx`` or ``model.pt``) and
``labels.json`` (class names, preprocessing, the model's inputs and outputs). The model
takes uint8 images (N, 3, H, W) already resized and cropped as ``labels.json`` says, and
returns category and landmark probabilities and the decoded class indices (consistent
with the hierarchy for the ``hierarchical`` strategy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING
from torch import nn

from landmark_tl.core.io import atomic_write_json
from landmark_tl.serving.inference import TrainedRun


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


@dataclass
class ExportArgs:
    """The keys of ``landmark-tl export`` (documented in conf/export.yaml)."""

    run: str = MISSING
    format: ExportFormat = MISSING
    out: str | None = None  # default <run>/export


ConfigStore.instance().store(name="export_schema", node=ExportArgs)
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


def export(run: TrainedRun, fmt: ExportFormat | str, out_dir: Path) -> Path:
    """Write the model file and labels.json into ``out_dir``; return the model file."""
    if fmt not in {f.value for f in ExportFormat}:
        raise ValueError(f"fmt={fmt!r}: use one of {[f.value for f in ExportFormat]}")
    fmt = ExportFormat(fmt)
    module = Exportable(run).eval()  # the exported graph is the inference one
    example = torch.zeros(2, *run.preprocessing.input_size, dtype=torch.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt is ExportFormat.onnx:
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
