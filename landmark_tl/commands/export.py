"""``landmark-tl export``: the command line of :mod:`landmark_tl.serving.export`."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from landmark_tl.commands.cli import hydra_app
from landmark_tl.serving.export import ExportArgs, export
from landmark_tl.serving.inference import load_run
from landmark_tl.training.loggers import log_to_tracked_run


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    args: ExportArgs = OmegaConf.to_object(cfg)
    run = load_run(args.run)
    out = Path(args.out) if args.out else run.run_dir / "export"
    path = export(run, args.format, out)
    print(f"wrote {path} and {out / 'labels.json'}")
    if log_to_tracked_run(run.run_dir, out, "export"):
        print("added them to the run's MLflow run (artifacts/export)")


if __name__ == "__main__":
    sys.exit(main())
