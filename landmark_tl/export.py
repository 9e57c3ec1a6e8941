"""``python -m landmark_tl.export``: the ``landmark-tl export`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.export`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.export import main

    sys.exit(main())
