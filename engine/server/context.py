"""The key under which the running Node hangs on the aiohttp app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from engine.node import Node

NODE_KEY: web.AppKey[Any] = web.AppKey("node")


def node_of(request: web.Request) -> "Node":
    return request.app[NODE_KEY]
