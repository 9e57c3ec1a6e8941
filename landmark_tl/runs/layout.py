"""The names and format number of a run dir's files, shared by its writers and readers."""

# The layout of a run dir (metrics.json "run_format"). 2: strategy options typed by the
# registered strategy's config, frozen hub/file backbone weights kept in BACKBONE_WEIGHTS.
# Runs without the key are format 1.
RUN_FORMAT = 2
BACKBONE_WEIGHTS = "backbone.safetensors"
# A run that stopped with an error says why here (it has no metrics.json).
FAILED_FILE = "failed.json"
