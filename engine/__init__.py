"""ringsync's headless engine: every node runs it; it never imports textual."""
