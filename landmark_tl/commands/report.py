"""``landmark-tl report``: compare runs and multiruns (Table 1).

    landmark-tl report runs=DIR [runs=[DIR1,DIR2]] [out=OUT] [study=ID|all] [bootstrap=2000]

Finds every metrics.json below the DIRs (runs, Hydra multiruns, parents of either), puts
debug, failed and unfinished runs apart, groups the others by study and, within a study, by
approach and sweep point (see :mod:`landmark_tl.reporting.studies`), and writes table1.md,
table1.csv, table1.tex (booktabs), table1.png and report.html (with one page per run), best
first.

The table is computed by :func:`landmark_tl.reporting.report.summarise` and written by
:mod:`landmark_tl.reporting.render` and :mod:`landmark_tl.reporting.report_html`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from landmark_tl.commands.cli import as_list, hydra_app
from landmark_tl.core.errors import UsageError
from landmark_tl.core.io import printable
from landmark_tl.reporting.plots import write_run_plots
from landmark_tl.reporting.render import markdown_table, write_report
from landmark_tl.reporting.report import summarise
from landmark_tl.reporting.studies import Inventory, select, take_inventory


@dataclass
class ReportArgs:
    """The keys of ``landmark-tl report`` (documented in conf/report.yaml)."""

    runs: Any = MISSING  # a dir, or a list of them
    out: str | None = None  # default: <first of runs>-report, beside it
    study: str | None = None  # a study id (or its start), or all; None: the only study
    bootstrap: int = 2000
    seed: int = 0
    run_plots: bool = False  # draw each run's missing plots/ (runs with extras.plots=false)
    html: bool = True  # report.html and one page per run (runs/<name>.html)


ConfigStore.instance().store(name="report_schema", node=ReportArgs)


def default_out(inputs: Sequence[Path]) -> Path:
    """``<first input>-report`` beside the first input: never inside what is read."""
    first = inputs[0].resolve()
    base = first if first.is_dir() else first.parent
    return base.parent / f"{base.name}-report"


def _warn_not_scored(inventory: Inventory) -> None:
    for items in inventory.not_scored.values():
        for item in items:
            print(f"warning: {item}", file=sys.stderr)


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
