"""``python -m landmark_tl.shards``: the ``landmark-tl shards`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.shards`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.shards import main

    sys.exit(main())
