"""``python -m landmark_tl.train``: the ``landmark-tl train`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.train`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.train import main

    sys.exit(main())
