"""HttpTransport: resumable, bandwidth-coordinated, verified pushes over the node API.

One push: ``HEAD`` asks the target what it holds (done if the same hash is there;
else the offset of a partial upload), then one streaming ``PUT`` of the rest with
the declared size and SHA-256. The target hashes while writing and answers with its
verification; a hash that does not match ours is a failure, never a success. A live
snapshot (``PushRequest.live``) carries ``X-Ringsync-Live: 1`` on both requests.

A target that takes no byte of the body for ``RINGSYNC_UPLOAD_IDLE_SECONDS`` (a partition, a
vanished host: no FIN, no RST, the send buffer full) fails the push (``engine/stall.py``);
aiohttp's own read timeout starts only once the whole body is sent.

Errors: 400/401/403/409 are not retryable; anything else (5xx, 408 for an upload the
receiver gave up as stalled, 422 for bytes that did not verify or a database that failed
the receiver's integrity check, 503 for a failing disk there, 507 for a full one) is, and
the caller backs off. A failure feeds the target's breaker unless it was the request's or
the file's (400, 409, 422), backpressure, or a full target (507: the router already holds
a full node by its free space; a breaker would only add a wait after it has room again).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp

from engine.bandwidth import GRANT_BYTES, BandwidthCoordinator
from engine.errors import describe
from engine.health import HealthCheckResult
from engine.stall import first_piece_grace, upload_idle_seconds
from engine.headers import (H_BACKPRESSURE, H_KEY, H_LIVE, H_MTIME, H_OFFSET, H_ORIGIN,
                            H_REASON, H_ROOT, H_SHA, H_SIZE, H_SOURCE, H_URGENCY, H_VERIFIED)
from engine.transfers import Transfer
from engine.transport.base import PushRecord, PushRequest, PushResult, TransferError

PROGRESS_BYTES = GRANT_BYTES
"""A chunk goes to the connection in pieces of this size, each drawn from the bucket just
before it is sent: each piece taken is progress, so the stall guard never mistakes a big
chunk on a slow link for a silent target (a 256 MiB chunk at 2 MB/s takes minutes; a 64 KiB
piece takes 16 s even at 4 KB/s)."""


class HttpTransport:
    """Pushes over ``PUT /v1/objects``; one instance per node, sharing one session."""

    name = "http"

    def __init__(self, session: aiohttp.ClientSession, node: str,
                 bandwidth: BandwidthCoordinator, chunk_bytes: int) -> None:
        self.session = session
        """Carries the cluster bearer token in its default headers."""
        self.node = node
        self.bandwidth = bandwidth
        self.chunk_bytes = chunk_bytes
        self.record = PushRecord("http")
        """Pushes and failures, and the health they add up to."""

    def health_check(self) -> HealthCheckResult:
        return self.record.health_check()

    async def push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        return await self.record.run(self._push(request, transfer))

    def _url(self, request: PushRequest) -> str:
        art = request.artifact
        return f"{request.target_url}/v1/objects/{art.data_type}/{quote(art.path)}"

    async def _push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        art, url = request.artifact, self._url(request)
        try:
            offset = await self._probe(request, url)
            if isinstance(offset, PushResult):
                return offset
            for _ in range(2):  # a 409 with the receiver's true offset gets one corrected try
                transfer.offset, transfer.done = offset, 0
                result = await self._put(request, url, offset, transfer)
                if isinstance(result, PushResult):
                    return result
                offset = result
            raise TransferError(f"{request.target} keeps disagreeing about the resume offset")
        except aiohttp.ClientError as exc:
            raise TransferError(f"{request.target} unreachable: {describe(exc)}",
                                unreachable=isinstance(exc, (aiohttp.ClientConnectorError,
                                                             aiohttp.ConnectionTimeoutError))
                                ) from exc
        except asyncio.TimeoutError as exc:
            raise TransferError(f"{request.target} timed out on {art.key}") from exc

    async def _probe(self, request: PushRequest, url: str) -> int | PushResult:
        art = request.artifact
        headers = {H_SHA: art.sha256, H_ORIGIN: art.origin}
        if request.live:
            headers.update({H_LIVE: "1", H_SOURCE: self.node})
        # a HEAD unanswered for the stall bound is a stall too (a connection kept alive
        # into a partition or a newly closed port would otherwise wait out sock_read)
        base = self.session.timeout  # a request's timeout replaces the session's whole
        timeout = aiohttp.ClientTimeout(total=base.total, connect=base.connect,
                                        sock_connect=base.sock_connect,
                                        sock_read=upload_idle_seconds())
        async with self.session.head(url, headers=headers, timeout=timeout) as resp:
            if resp.status == 200:
                held = resp.headers.get(H_SHA, "")
                if held != art.sha256:
                    raise TransferError(f"{request.target} holds {art.key} with a different hash"
                                        f" ({held[:12]}…); ringsync never overwrites",
                                        retryable=False)
                return PushResult(request.target, held, art.size,
                                  float(resp.headers.get(H_VERIFIED, time.time())), True, 0,
                                  resp.headers.get(H_ROOT))
            if resp.status == 404:
                return int(resp.headers.get(H_OFFSET, "0"))
            if resp.status == 409:  # its last upload's handler is still at work: not a fault
                raise TransferError(f"{request.target} is still receiving {art.key}",
                                    target_fault=False)
            raise await _error(resp, request.target, art.key)

    async def _put(self, request: PushRequest, url: str, offset: int,
                   transfer: Transfer) -> int | PushResult:
        art = request.artifact
        headers = {
            H_SIZE: str(art.size), H_SHA: art.sha256, H_OFFSET: str(offset),
            H_SOURCE: self.node, H_ORIGIN: art.origin, H_MTIME: f"{art.mtime:.6f}",
            H_REASON: request.reason, H_URGENCY: request.urgency,
            "Content-Length": str(art.size - offset),
            "Content-Type": "application/octet-stream",
        }
        if art.config_key:
            headers[H_KEY] = art.config_key
        if request.live:
            headers[H_LIVE] = "1"
        idle = upload_idle_seconds()
        async with self.bandwidth.allocate(request.target, art.key) as alloc:
            try:
                async with asyncio.timeout(None) as stall:
                    body = self._read(request.source_file, offset, art.size, alloc, transfer,
                                      _StallGuard(stall, idle, first_piece_grace(offset)))
                    return await self._send(request, url, body, headers, transfer)
            except TimeoutError:
                if not stall.expired():
                    raise
                raise TransferError(
                    f"{request.target} took no bytes of {art.key} for {idle:g} s (stalled with"
                    f" {offset + transfer.done} of {art.size} bytes handed to the connection:"
                    " a partition or a vanished host)") from None

    async def _send(self, request: PushRequest, url: str, body: AsyncIterator[bytes],
                    headers: dict[str, str], transfer: Transfer) -> int | PushResult:
        art = request.artifact
        async with self.session.put(url, data=body, headers=headers) as resp:
            if resp.status in (200, 201):
                answer = await resp.json()
                if answer.get("sha256") != art.sha256 or answer.get("size") != art.size:
                    raise TransferError(f"{request.target} verified {answer.get('sha256')}"
                                        f" but we sent {art.sha256}")
                if request.live and answer.get("live") is not True:
                    raise TransferError(f"{request.target} did not keep {art.key} apart as"
                                        " a live snapshot (older ringsync?)", retryable=False)
                return PushResult(request.target, answer["sha256"], answer["size"],
                                  float(answer["verified_at"]),
                                  bool(answer.get("already_present")), transfer.done,
                                  answer.get("root_id"))
            if resp.status == 409:
                detail = await _json(resp)
                if "offset" in detail:
                    return int(detail["offset"])
            raise await _error(resp, request.target, art.key)

    async def _read(self, path: Path, offset: int, size: int, alloc,
                    transfer: Transfer, stall: _StallGuard) -> AsyncIterator[bytes]:
        """Stream ``path[offset:size]`` in chunks, reading the next chunk while one is sent.
        While a piece is with the connection (``yield``) the stall guard runs; while this
        node reads or waits for its bandwidth it does not. ``transfer.done`` counts the
        pieces the connection took."""
        fh = await asyncio.to_thread(open, path, "rb")
        nxt: asyncio.Future[bytes] | None = None
        try:
            await asyncio.to_thread(fh.seek, offset)
            remaining = size - offset
            nxt = asyncio.ensure_future(asyncio.to_thread(fh.read, min(self.chunk_bytes, remaining)))
            while remaining > 0:
                data = await nxt
                if not data:
                    raise TransferError(f"{path} shrank while being sent", target_fault=False)
                remaining -= len(data)
                if remaining > 0:
                    nxt = asyncio.ensure_future(
                        asyncio.to_thread(fh.read, min(self.chunk_bytes, remaining)))
                view = memoryview(data)
                for start in range(0, len(data), PROGRESS_BYTES):
                    piece = view[start:start + PROGRESS_BYTES]
                    await alloc.consume(len(piece))
                    stall.arm()
                    yield piece
                    stall.disarm()
                    transfer.done += len(piece)
        finally:
            if nxt is not None and not nxt.done():  # never close under a pending read
                await asyncio.gather(nxt, return_exceptions=True)
            fh.close()


class _StallGuard:
    """Cancels a push whose connection has held one chunk for ``idle`` seconds (the target
    takes no bytes: TCP's send buffer is full and nothing is acknowledged)."""

    def __init__(self, timeout: asyncio.Timeout, idle: float, first_grace: float = 0.0) -> None:
        self._timeout = timeout
        self._idle = idle
        self._grace = first_grace
        """Extra time for the first piece (a resumed upload's receiver hashes its part first)."""

    def arm(self) -> None:
        grace, self._grace = self._grace, 0.0
        self._set(asyncio.get_running_loop().time() + self._idle + grace)

    def disarm(self) -> None:
        self._set(None)

    def _set(self, when: float | None) -> None:
        try:
            self._timeout.reschedule(when)
        except RuntimeError:  # the push is over (its guard exited) while aiohttp still reads
            pass


async def _json(resp: aiohttp.ClientResponse) -> dict:
    try:
        data = json.loads(await resp.text())
        return data if isinstance(data, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


NOT_RETRYABLE = frozenset({400, 401, 403, 409})
"""Answers that another attempt cannot change (bad request, token, conflict)."""
NOT_TARGET_FAULT = frozenset({400, 409, 422, 507})
"""Answers that say nothing against the target's health (see the module docstring)."""


def error_kind(status: int, backpressure: str | None = None) -> tuple[bool, bool]:
    """(retryable, target_fault) of an error answer ``status``."""
    return (status not in NOT_RETRYABLE,
            status not in NOT_TARGET_FAULT and not backpressure)


async def _error(resp: aiohttp.ClientResponse, target: str, key: str) -> TransferError:
    detail = (await _json(resp)).get("error") or resp.reason
    backpressure = resp.headers.get(H_BACKPRESSURE) if resp.status == 503 else None
    retryable, target_fault = error_kind(resp.status, backpressure)
    return TransferError(f"{target} answered {resp.status} for {key}: {detail}",
                         retryable=retryable, backpressure=backpressure,
                         target_fault=target_fault)
