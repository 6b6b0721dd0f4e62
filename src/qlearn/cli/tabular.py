"""`qlearn tabular` and `qlearn plan` (to be written)."""
