"""``python -m landmark_tl.report``: the ``landmark-tl report`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.report`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.report import main

    sys.exit(main())
