"""``landmark-tl doctor``: the command line of :mod:`landmark_tl.data.doctor`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from landmark_tl.commands.cli import hydra_app
from landmark_tl.core.errors import UserError
from landmark_tl.data.doctor import folder_by_default, format_report, inspect_source


@hydra_app("doctor")
def check_data(cfg: DictConfig) -> None:
    """Report on the data of the training config ``cfg``; a UserError when it cannot train."""
    from landmark_tl.config.schema import to_train_config
    from landmark_tl.training.build import build_source, catalog_index

    config = to_train_config(cfg)
    source = build_source(config)
    report = inspect_source(
        source,
        config.data.split.to_spec(),
        config.data.split_file,
        config.data.min_images_per_landmark,
        catalog_index(config, source),
    )
    print(format_report(report), end="")
    if not report.ok:
        raise UserError("training cannot proceed on this data: see the report above")


def main(argv: Sequence[str] | None = None) -> int:
    """``landmark-tl doctor`` (see conf/doctor.yaml); 1 when training could not proceed."""
    return check_data(folder_by_default(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
