"""Opt-in silence for notices that say nothing about a run (``extras.quiet=true``).

Never installed at import: a notebook or another program keeps Python's and Lightning's
warnings as they are unless it calls :func:`quiet_known_notices`.
"""

from __future__ import annotations

import logging
import warnings

ADVERT = "💡 Tip:"  # Lightning's adverts in its rank-zero log
KNOWN_NOTICES = (
    # an internal deprecation inside Lightning
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # a frozen backbone is kept in eval mode on purpose
    r"Found \d+ module\(s\) in eval mode",
    # test predictions are gathered from all ranks and de-duplicated (TwoLevelStrategy)
    r"Using `DistributedSampler` with the dataloaders",
    r"torch.distributed.nn.functional.all_gather is deprec",
    # a resumed stage's earlier log rows are put back afterwards (fit._prepend_log)
    r"Experiment logs directory .* exists and is not empty",
    # every stage writes its own <stage>-best.ckpt into the one checkpoints/ folder
    r"Checkpoint directory .* exists and is not empty",
    # a probe is fitted before its epoch and returns no loss from training_step
    r"`training_step` returned `None`",
)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT)


def quiet_known_notices() -> None:
    """Hide the warnings in KNOWN_NOTICES and Lightning's adverts, process-wide."""
    for message in KNOWN_NOTICES:
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in logger.filters):
        logger.addFilter(_DropAdverts())
