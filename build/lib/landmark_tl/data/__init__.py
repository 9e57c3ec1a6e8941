"""Data: scan an image tree into a catalog, split it, and feed it to Lightning."""
