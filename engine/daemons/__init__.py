"""Long-running node daemons: auto sync, membership."""
