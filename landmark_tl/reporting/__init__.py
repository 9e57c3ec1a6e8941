"""What the report computes beyond Table 1: hierarchy-aware scores, the recommendation."""
