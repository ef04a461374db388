"""PeerClient: the one HTTP client for every call one node makes to another.

It owns the node's ``aiohttp.ClientSession`` (the cluster token in its headers, connect and
read timeouts) and maps every way a call can fail onto one exception, ``PeerError``:

- the peer could not be reached or did not answer in time (``unreachable``);
- it answered with a status the caller did not expect (``status``, and the peer's own
  ``error`` line when its body had one);
- it answered an expected status with a body that is not JSON.

Transports get the same session (``session``) for their streaming requests; nothing else
opens a session of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.errors import describe


class PeerError(Exception):
    """A node-to-node call that did not get the answer it asked for."""

    def __init__(self, message: str, *, node: str, status: int | None = None,
                 unreachable: bool = False) -> None:
        super().__init__(message)
        self.node = node
        """The peer called."""
        self.status = status
        """Its HTTP status, when it answered."""
        self.unreachable = unreachable
        """True when it did not answer at all (refused, reset, timed out)."""


@dataclass(frozen=True)
class PeerAnswer:
    """An answer with an expected status."""

    status: int
    body: Any
    """The parsed JSON body (None when the caller asked for ``raw`` only)."""
    raw: bytes
    """The body as received."""


def error_line(raw: bytes | str, limit: int = 200) -> str:
    """The ``error`` field of a JSON error body, else its first line, shortened."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text = body["error"]
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


class PeerClient:
    """Calls other nodes by name; ``open`` before the first call, ``close`` at stop."""

    def __init__(self, node: str, token: str, url_of: Callable[[str], str] | Mapping[str, str],
                 connect_timeout: float = 5.0, read_timeout: float = 60.0) -> None:
        self.node = node
        """The calling node's name."""
        self._token = token
        self._url_of = url_of if callable(url_of) else url_of.__getitem__
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self.counts = {"calls": 0, "failed": 0}
        """Calls made and calls that raised PeerError."""

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout,
                                              sock_read=self._read_timeout))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (for a transport's streaming requests)."""
        if self._session is None:
            raise RuntimeError("PeerClient used before open()")
        return self._session

    def url(self, peer: str, path: str = "") -> str:
        """``peer``'s base URL followed by ``path``."""
        return f"{self._url_of(peer)}{path}"

    async def call(self, peer: str, method: str, path: str, *, timeout: float,
                   expect: Collection[int] = (200,), params: Mapping[str, str] | None = None,
                   json_body: Any = None, data: bytes | None = None,
                   headers: Mapping[str, str] | None = None, parse: bool = True) -> PeerAnswer:
        """One request to ``peer``; the answer when its status is in ``expect`` (its body
        parsed as JSON unless ``parse`` is False), else PeerError."""
        self.counts["calls"] += 1
        try:
            async with self.session.request(
                    method, self.url(peer, path), params=params, json=json_body, data=data,
                    headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.counts["failed"] += 1
            raise PeerError(f"{peer} unreachable: {describe(exc)}", node=peer,
                            unreachable=True) from None
        if status not in expect:
            self.counts["failed"] += 1
            detail = error_line(raw)
            raise PeerError(f"{peer} answered {method} {path.split('?')[0]} with {status}"
                            + (f": {detail}" if detail else ""), node=peer, status=status)
        body = None
        if parse:
            try:
                body = json.loads(raw)
            except ValueError:
                self.counts["failed"] += 1
                raise PeerError(f"{peer} answered {method} {path.split('?')[0]} ({status})"
                                " with no JSON", node=peer, status=status) from None
        return PeerAnswer(status, body, raw)

    async def get(self, peer: str, path: str, *, timeout: float, **kwargs: Any) -> Any:
        """GET and return the JSON body (status 200 unless ``expect`` says otherwise)."""
        return (await self.call(peer, "GET", path, timeout=timeout, **kwargs)).body

    async def post(self, peer: str, path: str, body: Any, *, timeout: float,
                   **kwargs: Any) -> PeerAnswer:
        """POST ``body`` as JSON."""
        return await self.call(peer, "POST", path, timeout=timeout, json_body=body, **kwargs)

    @asynccontextmanager
    async def stream(self, peer: str, path: str, *, connect_timeout: float = 3.0,
                     read_timeout: float = 60.0) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long-lived GET (an event stream) whose status is 200; PeerError otherwise."""
        self.counts["calls"] += 1
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                        sock_read=read_timeout)
        try:
            async with self.session.get(self.url(peer, path), timeout=timeout) as resp:
                if resp.status != 200:
                    self.counts["failed"] += 1
                    raise PeerError(f"{peer} answered GET {path.split('?')[0]} with"
                                    f" {resp.status}", node=peer, status=resp.status)
                yield resp
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.counts["failed"] += 1
            raise PeerError(f"{peer} unreachable: {describe(exc)}", node=peer,
                            unreachable=True) from None
