"""BoundedSite: the node's listening socket, bounded against idle, slow and too many clients.

aiohttp alone keeps a connection that never sends a request until TCP gives up, has no
limit on connections, and buffers slow headers up to its size limits; 1,030 idle sockets
exhausted a node's 1,024 descriptors and 300 slow-header clients took 600 MiB. Here:

* the descriptor limit (RLIMIT_NOFILE) is raised to the hard limit (at most 65,536) at start;
* at most ``max_connections`` connections in total (the descriptor limit less a reserve for
  files, the manifest and outbound connections, at most ``MAX_CONNECTIONS``) and
  ``MAX_PER_PEER`` per peer address; one beyond is accepted and closed at once (counted,
  logged rate-limited), so one noisy address cannot shut out the others;
* a request's headers must arrive within ``HEADER_TIMEOUT_SECONDS`` of its first byte (of
  the connection, for the first request): a connection that dawdles is closed, the first
  request or any later one on a keep-alive connection;
* an idle keep-alive connection is closed after ``KEEPALIVE_SECONDS`` (aiohttp's default is
  an hour), and headers are held to ``MAX_HEADERS`` fields of ``MAX_FIELD_BYTES`` each.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any

from aiohttp import web

from engine.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8192
MAX_PER_PEER = 512
FD_RESERVE = 256
"""Descriptors kept for everything that is not an inbound connection."""
HEADER_TIMEOUT_SECONDS = 10.0
KEEPALIVE_SECONDS = 30.0
MAX_HEADERS = 32
MAX_FIELD_BYTES = 4096
FD_LIMIT_WANTED = 65536

HANDLER_ARGS: dict[str, Any] = {"keepalive_timeout": KEEPALIVE_SECONDS,
                                "max_headers": MAX_HEADERS, "max_field_size": MAX_FIELD_BYTES}
"""What ``web.AppRunner`` passes to each connection's request handler."""


def raise_fd_limit(wanted: int = FD_LIMIT_WANTED) -> int:
    """Raise the soft descriptor limit towards ``wanted`` (never above the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


class ConnectionGuard:
    """Counts inbound connections per peer and closes those over the caps or too slow."""

    def __init__(self, max_connections: int, max_per_peer: int = MAX_PER_PEER,
                 header_timeout: float = HEADER_TIMEOUT_SECONDS) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.header_timeout = header_timeout
        self.open = 0
        """Connections open now."""
        self.per_peer: Counter[str] = Counter()
        self.refused = 0
        """Connections closed at once: over the total or the per-peer cap."""
        self.header_timeouts = 0
        """Connections closed because a request's headers did not come in time."""
        self._conns: dict[int, _Guarded] = {}
        self._log = RateLimitedLog(log)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Marks the connection busy with a request (its headers arrived) until answered."""
        conn = self._conns.get(id(request.transport)) if request.transport else None
        if conn is None:
            return await handler(request)
        conn.request_started()
        try:
            return await handler(request)
        finally:
            conn.request_done()

    def wrap(self, make_handler: Any) -> Any:
        """A protocol factory for ``loop.create_server`` around aiohttp's."""
        return lambda: _Guarded(self, make_handler())

    def admit(self, transport: asyncio.BaseTransport, conn: "_Guarded") -> str | None:
        """Count a new connection; its peer address, or None (closed: over a cap)."""
        peer = transport.get_extra_info("peername")
        addr = str(peer[0]) if peer else "?"
        if self.open >= self.max_connections or self.per_peer[addr] >= self.max_per_peer:
            self.refused += 1
            self._log.warning(f"refused:{addr}", "refused a connection from %s: %d open (%d from"
                              " it; caps %d, %d per address)", addr, self.open,
                              self.per_peer[addr], self.max_connections, self.max_per_peer)
            transport.abort()
            return None
        self.open += 1
        self.per_peer[addr] += 1
        self._conns[id(transport)] = conn
        return addr

    def release(self, transport: asyncio.BaseTransport, addr: str) -> None:
        self.open -= 1
        self.per_peer[addr] -= 1
        if not self.per_peer[addr]:
            del self.per_peer[addr]
        self._conns.pop(id(transport), None)

    def too_slow(self, conn: "_Guarded") -> None:
        """Close ``conn`` unless the request it was waiting for has arrived meanwhile."""
        conn.timer = None
        if conn.busy or conn.transport.is_closing():
            return
        self.header_timeouts += 1
        self._log.warning(f"slow:{conn.addr}", "closed a connection from %s: no complete"
                          " request headers within %.0fs", conn.addr, self.header_timeout)
        conn.transport.abort()

    def status(self) -> dict[str, int]:
        return {"open": self.open, "refused": self.refused, "header_timeouts": self.header_timeouts,
                "max_connections": self.max_connections, "max_per_peer": self.max_per_peer}


class _Guarded(asyncio.Protocol):
    """aiohttp's request handler behind the guard (the handler itself has ``__slots__``)."""

    def __init__(self, guard: ConnectionGuard, handler: Any) -> None:
        self.guard = guard
        self.handler = handler
        self.addr: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        """The header deadline of the request being waited for (None: none pending)."""
        self.busy = False
        """A request's headers arrived and it is not answered yet."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.addr = self.guard.admit(transport, self)
        if self.addr is None:
            return
        self._arm()  # the first request: from the connection on
        self.handler.connection_made(transport)

    def _arm(self) -> None:
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(
                self.guard.header_timeout, self.guard.too_slow, self)

    def request_started(self) -> None:
        self.busy = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def request_done(self) -> None:
        self.busy = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.addr is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.guard.release(self.transport, self.addr)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.addr is None:
            return
        if not self.busy:  # the first bytes of a further request on a keep-alive connection
            self._arm()
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.addr is not None else None

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class BoundedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass through a ConnectionGuard."""

    def __init__(self, runner: web.AppRunner, host: str, port: int,
                 guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server), self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]


def guard_for(fd_limit: int) -> ConnectionGuard:
    """The guard for a process allowed ``fd_limit`` descriptors."""
    return ConnectionGuard(max(64, min(MAX_CONNECTIONS, fd_limit - FD_RESERVE)))
