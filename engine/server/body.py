"""The body of an upload: streamed into its part file while being hashed, bounded in memory.

A sender that stops sending without closing the connection (a vanished host: no FIN, no
RST) is given ``UPLOAD_IDLE_SECONDS`` per read; then the upload ends as ``UploadStalled``,
keeping every byte that arrived for a resume. An OSError of this node's disk (writing,
fsyncing the part) ends it as ``diskio.DiskError``; that part must be discarded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

from aiohttp import web

from engine import diskio
from engine.hashing import sha256_prefix
from engine.stall import IDLE_ENV, UPLOAD_IDLE_SECONDS, upload_idle_seconds  # noqa: F401 (re-exported)
from engine.transfers import Transfer

class UploadStalled(Exception):
    """No byte of the body arrived for ``idle`` seconds; what did arrive is in the part."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        super().__init__(f"no bytes for {idle:g} s")


async def receive_body(request: web.Request, part: Path, offset: int, size: int, chunk: int,
                   transfer: Transfer) -> str:
    """Append the body to ``part`` while hashing; returns the hex digest of the whole object.

    The body's pieces are taken as aiohttp parsed them (``readchunk``: no joining, no
    copying) in batches of about ``chunk`` bytes. Each batch is written and hashed in a
    worker thread (both release the GIL) while the loop reads the next batch, so
    receive, write and hash overlap; aiohttp buffers up to two chunks meanwhile, so
    about four chunks are in memory at most. If the sender goes away, every byte that
    was handed over is still written, so a resume loses nothing.

    Raises ``UploadStalled`` when one read waits more than ``upload_idle_seconds()`` (the
    bytes that arrived are written first), and ``diskio.DiskError`` when opening, writing
    or fsyncing the part fails (its bytes are then not to be trusted).
    """
    idle = upload_idle_seconds()
    hasher = hashlib.sha256()
    if offset:
        await asyncio.to_thread(sha256_prefix, part, offset, hasher)
    loop = asyncio.get_running_loop()
    content = request.content
    set_chunk = getattr(content, "set_read_chunk_size", None)  # aiohttp >= 3.14
    if set_chunk is not None:
        set_chunk(chunk)
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    batched, position = 0, offset
    # Opened without leaving the loop: a hang-up is not processed before the bytes
    # already buffered are taken.
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC), 0o644)
    except OSError as exc:
        raise diskio.DiskError("open", exc) from exc
    diskio.reserve(fd, offset, size - offset)

    async def hand_off() -> None:
        nonlocal pending, batch, batched, position
        pieces, n = batch, batched
        batch, batched = [], 0
        if pending is not None:
            await pending
        pending = loop.run_in_executor(None, _write_and_hash, fd, hasher, pieces, position)
        position += n
        transfer.done += n

    try:
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        data, _ = await content.readchunk()
                except TimeoutError:
                    raise UploadStalled(idle) from None
                if not data:
                    if content.at_eof():
                        break
                    continue
                if transfer.offset + transfer.done + batched + len(data) > size:
                    raise web.HTTPBadRequest(text=json.dumps({"error": "body longer than declared size"}),
                                           content_type="application/json")
                batch.append(data)
                batched += len(data)
                if batched >= chunk:
                    await hand_off()
        finally:  # also when the sender went away: keep every byte that arrived
            if batch:
                await hand_off()
            if pending is not None:
                await pending
        try:
            await asyncio.to_thread(os.fsync, fd)
        except OSError as exc:
            raise diskio.DiskError("fsync", exc) from exc
    finally:
        os.close(fd)
    return hasher.hexdigest()


def _write_and_hash(fd: int, hasher: "hashlib._Hash", pieces: list[bytes], position: int) -> None:
    try:
        diskio.write_at(fd, pieces, position)
    except OSError as exc:
        raise diskio.DiskError("write", exc) from exc
    for data in pieces:
        hasher.update(data)
