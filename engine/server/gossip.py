"""``/v1/gossip``: the gossip strategy's routes (thin: the work is ``GossipDaemon``'s).

    POST /v1/gossip        a peer's request -> this node's answer (engine.gossip.protocol)
    POST /v1/gossip/delta  a peer's follow-up delta -> {node, cursor, merged}
    POST /v1/gossip/send   {origin, data_type, path, sha256, to}: push this node's verified copy to
                           ``to`` in the background -> 202 {node, artifact, to, started}

Errors are JSON ``{"error"}``: 400 bad input (not JSON, a missing or mistyped field, an
unsafe path, an unknown host), 404 no verified copy of that version here, 409 (exchange
and delta only) this node runs another strategy, 413 a body over ``MAX_BODY_BYTES``, 503 paused
(or this node's circuit breaker to ``to`` is open).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from engine.gossip import ProtocolError
from engine.gossip.holder import SendRefused
from engine.paths import DATA_TYPES, UnsafePath, check_relative
from engine.server.context import GossipServing, node_of

MAX_BODY_BYTES = 32 * 2**20
"""A follow-up delta is at most a page of rows per table; far below this."""
_HEX = frozenset("0123456789abcdef")
_compact = functools.partial(json.dumps, separators=(",", ":"))
"""Gossip answers are sent compact: an idle exchange is a few hundred bytes."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, message)


def _daemon(request: web.Request) -> GossipServing:
    node = node_of(request)
    if node.gossip is None:
        raise _Refusal(409, f"{node.name} does not run the gossip strategy"
                            f" (its strategy: {node.config.strategy_for(node.name)})")
    return node.gossip


async def _body(request: web.Request) -> Any:
    """The JSON body, read with a limit of its own (deltas may exceed the app's 1 MiB)."""
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise _Refusal(413, f"body over {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refusal(400, f"body is not JSON: {exc}") from None


async def _serve(request: web.Request, step: str) -> web.Response:
    """Answer a peer's exchange request or follow-up delta with the daemon's ``serve_<step>``."""
    try:
        gossip = _daemon(request)
        serve = gossip.serve_exchange if step == "exchange" else gossip.serve_delta
        return web.json_response(serve(await _body(request)), dumps=_compact)
    except _Refusal as exc:
        return exc.response
    except ProtocolError as exc:
        return _error(400, str(exc))


async def exchange(request: web.Request) -> web.Response:
    return await _serve(request, "exchange")


async def delta(request: web.Request) -> web.Response:
    return await _serve(request, "delta")


def _send_request(body: Any, hosts: Any, me: str) -> tuple[str, str, str, str, str]:
    """(origin, data_type, path, sha256, to) of a send request, or _Refusal(400) saying what
    is wrong."""
    if not isinstance(body, dict):
        raise _Refusal(400, "body must be a JSON object {origin, data_type, path, sha256, to}")
    for name in ("origin", "data_type", "path", "sha256", "to"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise _Refusal(400, f"{name} (a non-empty string) is required")
    origin, data_type, path, sha, to = (body[k] for k in ("origin", "data_type", "path",
                                                          "sha256", "to"))
    if origin not in hosts:
        raise _Refusal(400, f"origin must be a host of this cluster, not {origin[:80]!r}")
    if data_type not in DATA_TYPES:
        raise _Refusal(400, f"unknown data type {data_type!r} (expected one of"
                            f" {', '.join(DATA_TYPES)})")
    try:
        check_relative(path)
    except UnsafePath as exc:
        raise _Refusal(400, str(exc)) from None
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise _Refusal(400, "sha256 must be 64 lowercase hex digits")
    if to not in hosts or to == me:
        raise _Refusal(400, f"to must be another host of this cluster, not {to[:80]!r}")
    return origin, data_type, path, sha, to


async def send(request: web.Request) -> web.Response:
    """Served by every node, gossip or not: a gossip pull and a scrub's repair both ask a
    holder to push its verified copy of one version."""
    node = node_of(request)
    try:
        args = _send_request(await _body(request), node.config.hosts, node.name)
        return web.json_response(node.sender.start(*args), status=202)
    except _Refusal as exc:
        return exc.response
    except SendRefused as exc:
        return _error(exc.status, str(exc))
    except UnsafePath as exc:
        return _error(400, str(exc))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/gossip", exchange)
    app.router.add_post("/v1/gossip/delta", delta)
    app.router.add_post("/v1/gossip/send", send)
