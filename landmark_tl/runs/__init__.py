"""The run-dir format: files, fingerprint, provenance."""
