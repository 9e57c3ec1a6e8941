"""Scores of predictions: hierarchy-aware scores (mistake severity, distance@k)."""
