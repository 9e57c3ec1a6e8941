"""``python -m landmark_tl.doctor``: the ``landmark-tl doctor`` command.

Kept so that the documented ``python -m`` form keeps working; the command lives in
:mod:`landmark_tl.commands.doctor`. Importing this module does nothing.
"""

if __name__ == "__main__":
    import sys

    from landmark_tl.commands.doctor import main

    sys.exit(main())
