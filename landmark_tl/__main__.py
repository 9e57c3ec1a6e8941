"""``python -m landmark_tl <command> ...``: the ``landmark-tl`` command."""

import sys

from landmark_tl.cli import main

sys.exit(main())
