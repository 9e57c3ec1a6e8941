"""Errors a user can fix, and how the command lines report them.

A :class:`UserError` is a problem with the user's data, config, arguments or run dir, not
a bug: its message names the file or key and the fix, so a command line prints the message
alone (no traceback) and exits with the error's code: 1 for data, config and run-dir
problems, 2 for usage (a bad or missing argument). ``--debug`` on the command line or
``HYDRA_FULL_ERROR=1`` in the environment lets the error propagate with its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "HYDRA_FULL_ERROR"  # Hydra's own switch for full tracebacks; ours too

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A data, config or run-dir problem the user can fix; the message names it and the fix."""

    exit_code = EXIT_ERROR


class UsageError(UserError):
    """A bad or missing command-line argument."""

    exit_code = EXIT_USAGE


class ConfigError(UserError, ValueError):
    """Config values that cannot work; the message names every offending key."""


def debugging() -> bool:
    """Whether errors should propagate with their traceback (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(DEBUG_ENV, "") == "1"


def take_debug_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--debug``; when it was there, turn on :func:`debugging` (in the
    environment, so that Hydra and child processes agree)."""
    if DEBUG_FLAG in argv:
        os.environ[DEBUG_ENV] = "1"
    return [arg for arg in argv if arg != DEBUG_FLAG]


def report(error: UserError) -> int:
    """Print ``error`` as the command's last word; its exit code."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return error.exit_code


def command(main: Callable[[list[str]], int]) -> Callable[[Sequence[str] | None], int]:
    """Decorate a command line's ``main(argv) -> exit code``: ``argv`` defaults to
    ``sys.argv[1:]`` and loses ``--debug``; a :class:`UserError` is printed alone and its
    exit code returned, unless debugging."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        args = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
        try:
            return main(args)
        except UserError as error:
            if debugging():
                raise
            return report(error)

    return run


def hydra_command(task: F) -> F:
    """Decorate a Hydra task function: a :class:`UserError` is printed alone and ends the
    process with its exit code. (Hydra prints a traceback for any exception leaving the
    task, but lets ``SystemExit`` through untouched.)"""

    @functools.wraps(task)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except UserError as error:
            if debugging():
                raise
            raise SystemExit(report(error)) from None

    return run  # type: ignore[return-value]
