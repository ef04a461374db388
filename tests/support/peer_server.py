"""Real peers for unit tests: small aiohttp apps on free loopback ports, and a real
``PeerClient`` that reaches them by node name.

    async with peers({"gpu-1": routes}, down=["cpu-1"]) as client:
        await client.get("gpu-1", "/status", timeout=1)

``routes`` maps ``"GET /status"`` to a handler. A node listed in ``down`` gets the URL of a
port nobody listens on (refused: ``PeerError.unreachable``).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager

from aiohttp import web

from engine.peer_client import PeerClient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN = "unit-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_of(routes: Mapping[str, Handler]) -> web.Application:
    """An app serving ``routes`` (``"METHOD /path"`` -> handler) that checks the token."""

    @web.middleware
    async def token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "no token"}, status=401)
        return await handler(request)

    app = web.Application(middlewares=[token])
    for route, handler in routes.items():
        method, path = route.split(" ", 1)
        app.router.add_route(method, path, handler)
    return app


@asynccontextmanager
async def peers(nodes: Mapping[str, Mapping[str, Handler] | web.Application],
                down: Iterable[str] = (), caller: str = "coord") -> AsyncIterator[PeerClient]:
    """An opened PeerClient of ``caller`` whose peers are ``nodes`` (served for real) and
    ``down`` (refused)."""
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    try:
        for name, routes in nodes.items():
            app = routes if isinstance(routes, web.Application) else app_of(routes)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            urls[name] = f"http://127.0.0.1:{port}"
        for name in down:
            urls[name] = f"http://127.0.0.1:{free_port()}"
        client = PeerClient(caller, TOKEN, urls, connect_timeout=1.0, read_timeout=5.0)
        await client.open()
        try:
            yield client
        finally:
            await client.close()
    finally:
        for runner in runners:
            await runner.cleanup()
