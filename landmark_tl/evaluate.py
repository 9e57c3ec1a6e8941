"""``python -m landmark_tl.evaluate``: the ``landmark-tl evaluate`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.evaluate`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.evaluate import main

    sys.exit(main())
