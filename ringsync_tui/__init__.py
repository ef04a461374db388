"""ringsync's terminal face: the CLI and (on the coordinator) the Textual dashboard.

Importing this package does not import textual; only the dashboard entry does.
"""
