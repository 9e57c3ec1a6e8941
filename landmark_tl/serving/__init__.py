"""Finished runs at work: load, predict, evaluate, export."""
