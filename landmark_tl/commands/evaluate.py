"""``landmark-tl evaluate``: the command line of :mod:`landmark_tl.serving.evaluate`."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from landmark_tl.commands.cli import hydra_app
from landmark_tl.core.io import atomic_write_json, printable
from landmark_tl.serving.evaluate import EvaluateArgs, evaluate
from landmark_tl.serving.inference import load_run
from landmark_tl.serving.predict import output_file


@hydra_app("evaluate")
def main(cfg: DictConfig) -> None:
    args: EvaluateArgs = OmegaConf.to_object(cfg)
    out = output_file(args.out, Path(args.run) / "evaluation.json")
    run = load_run(args.run)
    result = evaluate(run, args.data.root)
    atomic_write_json(out, result)
    for task, s in result["test"].items():
        print(
            f"{task:<9} macro F1 {s['macro_f1']:.3f}   accuracy {s['accuracy']:.3f}   (n={s['n']})"
        )
    for label in result["unknown_labels"]:
        print(f"unknown label, not scored: {label}", file=sys.stderr)
    print(f"written to {printable(str(out))}")


if __name__ == "__main__":
    sys.exit(main())
