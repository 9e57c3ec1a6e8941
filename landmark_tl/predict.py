"""``python -m landmark_tl.predict``: the ``landmark-tl predict`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.predict`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.predict import main

    sys.exit(main())
