"""The node's HTTP API."""

from engine.server.app import make_app

__all__ = ["make_app"]
