"""The body of an upload: streamed into its part file while being hashed, bounded in memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

from aiohttp import web

from engine import diskio
from engine.hashing import sha256_prefix
from engine.transfers import Transfer


async def receive_body(request: web.Request, part: Path, offset: int, size: int, chunk: int,
                   transfer: Transfer) -> str:
    """Append the body to ``part`` while hashing; returns the hex digest of the whole object.

    The body's pieces are taken as aiohttp parsed them (``readchunk``: no joining, no
    copying) in batches of about ``chunk`` bytes. Each batch is written and hashed in a
    worker thread (both release the GIL) while the loop reads the next batch, so
    receive, write and hash overlap; aiohttp buffers up to two chunks meanwhile, so
    about four chunks are in memory at most. If the sender goes away, every byte that
    was handed over is still written, so a resume loses nothing.
    """
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
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC), 0o644)
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
                data, _ = await content.readchunk()
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
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def _write_and_hash(fd: int, hasher: "hashlib._Hash", pieces: list[bytes], position: int) -> None:
    diskio.write_at(fd, pieces, position)
    for data in pieces:
        hasher.update(data)
