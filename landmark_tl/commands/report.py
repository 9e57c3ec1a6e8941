"""``landmark-tl report``: the command line of :mod:`landmark_tl.reporting.report`."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from landmark_tl.commands.cli import as_list, hydra_app
from landmark_tl.core.errors import UsageError
from landmark_tl.core.io import printable
from landmark_tl.reporting.plots import write_run_plots
from landmark_tl.reporting.report import (
    ReportArgs,
    _warn_not_scored,
    default_out,
    markdown_table,
    summarise,
    write_report,
)
from landmark_tl.reporting.studies import select, take_inventory


@hydra_app("report")
def main(cfg: DictConfig) -> None:
    """Command line entry point; exit 2 when a path holds no usable run or the runs belong
    to several studies and none was chosen."""
    args: ReportArgs = OmegaConf.to_object(cfg)
    dirs = [Path(d) for d in as_list(args.runs)]
    if args.bootstrap < 1:
        raise UsageError(f"bootstrap={args.bootstrap}: must be a whole number >= 1")
    inventory = take_inventory(dirs)
    _warn_not_scored(inventory)
    if not inventory.studies:
        raise UsageError("no finished run to score (see the warnings); nothing to report")
    try:
        studies = select(inventory, args.study)
    except ValueError as error:
        raise UsageError(str(error)) from error
    out = Path(args.out) if args.out else default_out(dirs)
    for study in studies:
        if args.run_plots:  # runs made with extras.plots=false (sweeps) get their plots now
            for run in study.runs:
                if not (run.directory / "plots").is_dir():
                    write_run_plots(run.directory)
        folder = out / study.id if args.study == "all" else out
        table = summarise(study.runs, bootstrap=args.bootstrap, seed=args.seed)
        read = [f"Study `{study.id}`: {study.describe()}.", "", *inventory.read_lines()]
        files = write_report(table, folder, read=read)
        if args.html:
            from landmark_tl.reporting.report_html import write_comparison_pages

            files |= write_comparison_pages(table, study.runs, folder, read)
        print(markdown_table(table, read=read))
        print("wrote " + ", ".join(printable(str(p)) for p in files.values()))


if __name__ == "__main__":
    sys.exit(main())
