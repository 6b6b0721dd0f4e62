"""qlearn CLI commands (to be written)."""
