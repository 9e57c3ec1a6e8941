"""Hydra configuration tree of landmark_tl (found as ``pkg://landmark_tl.conf``)."""
