"""``landmark-tl shards out=DIR [per_shard=1000] [replace=true] data=... data.root=...``

Writes the images of any data source (bytes as stored) with their labels and original
paths as WebDataset tar shards, to move a data set to a cluster and train on it with
``data=shards data.root=DIR``. Images the source skips are listed, as in ``doctor``.
``out``, ``per_shard`` and ``replace`` are the command's own keys; the others compose the
training config (conf/shards.yaml), so ``--help`` and ``--cfg job`` show the data keys.
The set is written atomically (a new folder renamed into place, with ``shards.json``);
``out`` must be new or empty, or hold a shard set and ``replace=true`` be given, and it
never overlaps ``data.root``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from landmark_tl.commands.cli import hydra_app
from landmark_tl.core.errors import UsageError, report
from landmark_tl.core.io import printable

USAGE = "usage: landmark-tl shards out=DIR [per_shard=1000] [replace=true] data=... data.root=..."
OWN_KEYS = ("out=", "per_shard=", "replace=")
_BOOLEANS = {"true": True, "false": False}


@hydra_app("shards")
def write(cfg: DictConfig, out: str, per_shard: int, replace: bool = False) -> None:
    """Write the data of the training config ``cfg`` as shards into ``out``."""
    from landmark_tl.config.schema import to_train_config
    from landmark_tl.data.shard_writer import write_shards
    from landmark_tl.training.build import read_catalog

    config = to_train_config(cfg)
    catalog = read_catalog(config)  # everything: filters apply when training
    shards = write_shards(catalog, out, per_shard, config.seed, replace=replace)
    for problem in catalog.problems:
        print(f"skipped {printable(str(problem.path))}: {problem.reason}", file=sys.stderr)
    print(
        f"{len(catalog.records)} images in {len(shards)} shards written to "
        f"{printable(out)}; train on them with data=shards data.root={printable(out)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Take ``out=`` and ``per_shard=``; the rest are training overrides."""
    from landmark_tl.data.doctor import folder_by_default

    args = list(sys.argv[1:] if argv is None else argv)
    own = dict(a.split("=", 1) for a in args if a.startswith(OWN_KEYS))
    rest = folder_by_default(a for a in args if not a.startswith(OWN_KEYS))
    helping = any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "-sc") for a in rest)
    if not helping:
        problem = _usage_problem(own)
        if problem:
            return report(UsageError(f"{problem}\n{USAGE}"))
    return write(
        rest,
        out=own.get("out", ""),
        per_shard=int(own.get("per_shard", 1000)),
        replace=_BOOLEANS.get(own.get("replace", "false").lower(), False),
    )


def _usage_problem(own: dict[str, str]) -> str | None:
    """What is wrong with the command's own keys (None: nothing)."""
    if not own.get("out"):
        return "out= is missing: name the folder to write the shard set into"
    per_shard = own.get("per_shard", "1000")
    if not per_shard.isdigit() or int(per_shard) < 1:
        return f"per_shard={per_shard}: must be a whole number of images per shard, at least 1"
    if own.get("replace", "false").lower() not in _BOOLEANS:
        return f"replace={own['replace']}: must be true or false"
    return None


if __name__ == "__main__":
    sys.exit(main())
