"""``landmark-tl shards out=DIR [per_shard=1000] data=... data.root=...`` (or ``python -m``)

Writes the images of any data source (bytes as stored) with their labels and original
paths as WebDataset tar shards, to move a data set to a cluster and train on it with
``data=shards data.root=DIR``. Images the source skips are listed, as in ``doctor``.
``out`` and ``per_shard`` are the command's own keys; the others compose the training
config (conf/shards.yaml), so ``--help`` and ``--cfg job`` show the data keys.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from landmark_tl.cli import hydra_app
from landmark_tl.errors import UsageError, report
from landmark_tl.io import printable

USAGE = "usage: landmark-tl shards out=DIR [per_shard=1000] data=... data.root=..."
OWN_KEYS = ("out=", "per_shard=")


@hydra_app("shards")
def write(cfg: DictConfig, out: str, per_shard: int) -> None:
    """Write the data of the training config ``cfg`` as shards into ``out``."""
    from landmark_tl.build import read_catalog
    from landmark_tl.config import to_train_config
    from landmark_tl.data.sources.shards import write_shards

    config = to_train_config(cfg)
    catalog = read_catalog(config)  # everything: filters apply when training
    shards = write_shards(catalog, out, per_shard, config.seed)
    for problem in catalog.problems:
        print(f"skipped {printable(str(problem.path))}: {problem.reason}", file=sys.stderr)
    print(
        f"{len(catalog.records)} images in {len(shards)} shards written to "
        f"{printable(out)}; train on them with data=shards data.root={printable(out)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Take ``out=`` and ``per_shard=``; the rest are training overrides."""
    from landmark_tl.doctor import folder_by_default

    args = list(sys.argv[1:] if argv is None else argv)
    own = dict(a.split("=", 1) for a in args if a.startswith(OWN_KEYS))
    rest = folder_by_default(a for a in args if not a.startswith(OWN_KEYS))
    helping = any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "-sc") for a in rest)
    if not helping and ("out" not in own or not own.get("per_shard", "1").isdigit()):
        return report(UsageError(USAGE))
    return write(rest, out=own.get("out", ""), per_shard=int(own.get("per_shard", 1000)))


if __name__ == "__main__":
    sys.exit(main())
