"""Backbones, heads and the training strategies."""
