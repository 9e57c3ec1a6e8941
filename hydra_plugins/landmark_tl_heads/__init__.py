"""The ``heads`` Hydra launcher of landmark_tl (``hydra/launcher=heads``)."""
