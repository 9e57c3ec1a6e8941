"""The schema that Hydra's YAML fills in, and the Lightning surface it checks."""
