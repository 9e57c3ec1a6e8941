"""The training engine: build the pieces of a run, fit, checkpoints, loggers."""
