"""Foundations every layer may use: errors, atomic file writes, the label hierarchy."""
