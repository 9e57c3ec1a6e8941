"""The ``landmark-tl`` command: one subcommand per module, each a Hydra app.

``landmark-tl <command> key=value ...`` runs ``landmark_tl.<command>`` exactly as
``python -m landmark_tl.<command> key=value ...`` does. Every subcommand composes its config
from the package's tree (``pkg://landmark_tl.conf``), so it takes Hydra's ``key=value``
overrides, ``--help``, ``--cfg job`` and shell completion
(``eval "$(landmark-tl -sc install=bash)"``). Exit codes: 0 ok, 1 a data or config problem
(its message alone; ``--debug`` for the traceback), 2 usage (an unknown subcommand, or an
override the command's config does not take).
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# Light imports only: `landmark-tl --help` and `--version` answer without loading torch,
# timm, Lightning or Hydra (each command's module imports what it needs).
from landmark_tl import __version__
from landmark_tl.core.errors import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    UserError,
    command,
    debugging,
    hydra_command,
    report,
    take_debug_flag,
)
from landmark_tl.core.quiet import take_verbose_flag

if TYPE_CHECKING:
    from omegaconf import DictConfig

PROGRAM = "landmark-tl"
COMMANDS = {
    "train": "train a strategy; writes a run dir (sweeps: --multirun)",
    "report": "compare runs and multiruns: Table 1 (Markdown, CSV, bar chart)",
    "predict": "predict category and landmark of images with a finished run",
    "evaluate": "score a finished run on its test split or another tree",
    "export": "export a finished run's model (onnx, torchscript)",
    "doctor": "check a data set before training",
    "shards": "write a data set as WebDataset tar shards",
}
COMPLETION_FLAGS = ("-sc", "--shell-completion")

Task = Callable[..., Any]


def usage() -> str:
    """The top-level help: every subcommand with its one-line purpose."""
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {PROGRAM} <command> [key=value ...] [--help] [--cfg job] [--debug] [--verbose]",
        f"       {PROGRAM} --version",
        "",
    ]
    lines += [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    lines += [
        "",
        f"'{PROGRAM} <command> --help' lists a command's keys and config groups.",
        "--debug: a failure shows its traceback (also HYDRA_FULL_ERROR=1); --verbose: a run "
        "shows library notices, which go to <run dir>/train.log otherwise (extras.quiet=false).",
        f'Tab completion (bash): eval "$({PROGRAM} -sc install=bash)"',
    ]
    return "\n".join(lines)


def config_groups() -> str:
    """The config groups of the package's tree with their options, one ``group: a, b``
    line each, for ``--help`` (``${config_groups:}`` in the help templates). Hydra's own
    list would also show the typed schemas kept in its ConfigStore (head_swap_schema ...),
    which are no options to choose."""
    conf = importlib.resources.files("landmark_tl.conf")
    lines = []
    groups = [p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"]
    for group in sorted(groups, key=lambda p: p.name):
        yamls = [p.name for p in group.iterdir() if p.name.endswith(".yaml")]
        options = sorted(name.removesuffix(".yaml") for name in yamls)
        if options:
            lines.append(f"{group.name}: {', '.join(options)}")
    return "\n".join(lines) + "\n"


def check_overrides(config_name: str, args: Sequence[str]) -> None:
    """Refuse, as a :class:`UsageError` (exit 2), flags Hydra does not know and overrides
    that do not compose into ``config_name``: an unknown key (e.g. a training key given to
    ``predict``), a value of the wrong type, bad syntax, a required key not given. Sweeps
    are checked when the sweeper expands them."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from landmark_tl.config.schema import compose_dict

    parser = get_args_parser()
    try:
        parsed = parser.parse_args(list(args))
    except SystemExit as exit:  # argparse printed its message
        raise UsageError(f"see '{PROGRAM} {config_name} --help'") from exit
    if parsed.shell_completion or parsed.info:
        return
    overrides = []
    for text in parsed.overrides:
        try:
            overrides += OverridesParser.create().parse_overrides([text])
        except HydraException as error:
            raise UsageError(f"{text}: {error}") from error
    checked = [
        text
        for text, override in zip(parsed.overrides, overrides, strict=True)
        if not override.key_or_group.startswith("hydra")
        and not (parsed.multirun and override.is_sweep_override())
    ]
    see = f"see '{PROGRAM} {config_name} --help'"
    try:
        cfg = compose_dict(config_name, checked)
    except UsageError as error:
        raise UsageError(f"{error}\n({see})") from error
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and not (parsed.help or parsed.hydra_help or parsed.cfg):
        raise UsageError(f"{' and '.join(k + '=' for k in missing)} required ({see})")


def as_list(value: Any) -> list[str]:
    """A key that takes one value or a list of them (``runs=a`` or ``runs=[a,b]``)."""
    from omegaconf import ListConfig

    if isinstance(value, ListConfig | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def hydra_app(config_name: str) -> Callable[[Task], Callable[..., int]]:
    """Turn ``task(cfg, **options)`` into ``main(argv=None, **options) -> exit code``: a
    Hydra app on the config ``config_name`` of the package's tree. Overrides are checked
    first (exit 2); a :class:`UserError` the task raises prints its message alone and exits
    1 (2 for usage). ``options`` are the command's own arguments, if it parsed any."""

    import hydra
    from omegaconf import OmegaConf

    from landmark_tl.config.schema import CONFIG_MODULE

    if not OmegaConf.has_resolver("config_groups"):
        OmegaConf.register_new_resolver("config_groups", config_groups)

    def decorate(task: Task) -> Callable[..., int]:
        given: dict[str, Any] = {}

        @hydra.main(
            version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name
        )
        @functools.wraps(task)
        def app(cfg: DictConfig) -> Any:
            return hydra_command(task)(cfg, **given)

        @functools.wraps(task)
        def main(argv: Sequence[str] | None = None, **options: Any) -> int:
            given.clear()
            given.update(options)
            args = take_verbose_flag(take_debug_flag(list(sys.argv[1:] if argv is None else argv)))
            try:
                check_overrides(config_name, args)
            except UserError as error:
                if debugging():
                    raise
                return report(error)
            saved = sys.argv
            sys.argv = [PROGRAM if saved[0].endswith(PROGRAM) else saved[0], *args]
            try:
                app()
            except SystemExit as exit:
                return exit.code if isinstance(exit.code, int) else EXIT_OK
            finally:
                sys.argv = saved
            return EXIT_OK

        return main

    return decorate


def complete(argv: Sequence[str]) -> int:
    """Shell completion of ``landmark-tl``: subcommand names, then the subcommand's own
    (Hydra's) completion of keys, groups and options."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if not any(
        a.startswith("query=") for a in argv
    ):  # install / uninstall: any app prints the script for this program
        return run_command("doctor", argv)
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):
        typed = words[1] if len(words) == 2 else ""
        print(" ".join(name for name in COMMANDS if name.startswith(typed)))
        return EXIT_OK
    os.environ["COMP_LINE"] = " ".join([PROGRAM, *words[2:]]) + (" " if line.endswith(" ") else "")
    return run_command(words[1], argv) if words[1] in COMMANDS else EXIT_OK


def run_command(name: str, argv: Sequence[str]) -> int:
    """Run subcommand ``name`` with ``argv``, as ``python -m landmark_tl.<name>`` would."""
    module = importlib.import_module(f"landmark_tl.commands.{name}")
    saved = sys.argv
    sys.argv = [PROGRAM, *argv]
    try:
        return module.main(list(argv))
    finally:
        sys.argv = saved


@command
def main(argv: list[str]) -> int:
    """``landmark-tl <command> ...``: dispatch to the subcommand; unknown ones exit 2."""
    argv = take_verbose_flag(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return EXIT_OK if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        print(f"{PROGRAM} {__version__}")
        return EXIT_OK
    if argv[0] in COMPLETION_FLAGS:
        return complete(argv)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}\n{usage()}")
    return run_command(name, rest)


if __name__ == "__main__":
    sys.exit(main())
