"""``python -m landmark_tl <command> ...``: the ``landmark-tl`` command."""

import sys

from landmark_tl.commands.cli import main

sys.exit(main())
