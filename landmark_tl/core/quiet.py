"""A run's console: its own progress and summary; library notices go to ``train.log``.

While a run trains (:func:`run_console`, entered by ``landmark_tl.train``), Python warnings
and the records of Lightning's loggers (accelerator lines, adverts, checkpoint restores)
are written to ``<run dir>/train.log`` instead of stderr. ``extras.quiet=false`` or
``--verbose`` on the command line (``LANDMARK_TL_VERBOSE=1``) leave them on the console.
Nothing is changed at import, and everything is put back when the run ends, so a
notebook or another program keeps its own warning filters and logging set-up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

LOG_FILE = "train.log"
VERBOSE_ENV = "LANDMARK_TL_VERBOSE"
VERBOSE_FLAG = "--verbose"
# Loggers whose records are library notices (Lightning's own stderr handlers sit on them).
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
# A deprecation raised inside Lightning's own code (lightning/pytorch/utilities/_pytree.py
# against torch): nothing a user of landmark_tl can act on, so the run drops it, even in
# train.log. Only this message, and only for the run's duration.
LIBRARY_DEPRECATIONS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


def verbose_requested() -> bool:
    """Whether ``--verbose`` (or ``LANDMARK_TL_VERBOSE=1``) asked for library notices."""
    return os.environ.get(VERBOSE_ENV, "") == "1"


def take_verbose_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``; when it was there, turn on :func:`verbose_requested`
    (in the environment, so that the jobs of a multirun agree)."""
    if VERBOSE_FLAG in argv:
        os.environ[VERBOSE_ENV] = "1"
    return [arg for arg in argv if arg != VERBOSE_FLAG]


class _RunLogFile(logging.FileHandler):
    """``train.log`` in the run dir, opened at its first record (the dir exists by then)."""

    def _open(self) -> TextIO:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _log_handler(path: Path) -> tuple[logging.Handler, bool]:
    """The handler that writes ``path``: Hydra's job log file when it is that file (a
    ``python -m landmark_tl.train`` run), else a new one; and whether it is new."""
    wanted = os.path.abspath(path)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == wanted:
            return handler, False
    handler = _RunLogFile(wanted, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(_FORMAT))
    return handler, True


def _warning_to(handler: logging.Handler) -> Any:
    """A ``warnings.showwarning`` that writes the warning as a record of ``py.warnings``."""

    def show(message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        text = warnings.formatwarning(message, category, filename, lineno).rstrip()
        record = logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, (), None)
        handler.handle(record)

    return show


@contextlib.contextmanager
def run_console(run_dir: str | Path, quiet: bool = True) -> Iterator[None]:
    """For the ``with`` block: library notices go to ``run_dir/train.log`` when ``quiet``
    (else to the console, as without it); Lightning's LeafSpec deprecation is dropped."""
    handler, created = _log_handler(Path(run_dir) / LOG_FILE)
    saved = {
        name: (list(logger.handlers), logger.propagate)
        for name in LIBRARY_LOGGERS
        for logger in [logging.getLogger(name)]
    }
    with warnings.catch_warnings():  # restores showwarning and the filters afterwards
        for message in LIBRARY_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message)
        if quiet:
            warnings.showwarning = _warning_to(handler)
            for name in LIBRARY_LOGGERS:
                logger = logging.getLogger(name)
                logger.handlers = [handler]
                logger.propagate = False
        try:
            yield
        finally:
            for name, (handlers, propagate) in saved.items():
                logger = logging.getLogger(name)
                logger.handlers, logger.propagate = handlers, propagate
            if created:
                handler.close()


def notices_in_run_log(train: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``train(config, run_dir, ...)``: it runs inside :func:`run_console`, quiet
    unless ``config.extras.quiet`` is false or :func:`verbose_requested`."""

    @functools.wraps(train)
    def run(config: Any, run_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        quiet = config.extras.quiet and not verbose_requested()
        with run_console(run_dir, quiet):
            return train(config, run_dir, *args, **kwargs)

    return run
