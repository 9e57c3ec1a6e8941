"""``python -m landmark_tl.shards out=DIR [per_shard=1000] data=... data.root=...``

Writes the images of any data source (bytes as stored) with their labels and original
paths as WebDataset tar shards, to move a data set to a cluster and train on it with
``data=shards data.root=DIR``. Images the source skips are listed, as in ``doctor``.
"""

from __future__ import annotations

import sys

from landmark_tl.errors import UsageError, command
from landmark_tl.io import printable

USAGE = "usage: python -m landmark_tl.shards out=DIR [per_shard=1000] data=... data.root=..."


@command
def main(argv: list[str]) -> int:
    from landmark_tl.build import read_catalog
    from landmark_tl.data.sources.shards import write_shards
    from landmark_tl.doctor import compose_train_config

    ours = ("out=", "per_shard=")
    own = dict(a.split("=", 1) for a in argv if a.startswith(ours))
    if "out" not in own or not own.get("per_shard", "1").isdigit():
        raise UsageError(USAGE)
    config = compose_train_config([a for a in argv if not a.startswith(ours)])
    catalog = read_catalog(config)  # everything: filters apply when training
    shards = write_shards(catalog, own["out"], int(own.get("per_shard", 1000)), config.seed)
    for problem in catalog.problems:
        print(f"skipped {printable(str(problem.path))}: {problem.reason}", file=sys.stderr)
    print(
        f"{len(catalog.records)} images in {len(shards)} shards written to "
        f"{printable(own['out'])}; train on them with data=shards data.root={printable(own['out'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
