"""The command line: ``landmark-tl`` and one thin Hydra main per command."""
