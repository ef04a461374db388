"""``GET /v1/events``: the node's events as server-sent events, resumable.

``?since=SEQ`` (or the ``Last-Event-ID`` header a reconnecting EventSource sends)
replays everything newer from memory or the JSONL log, then streams live events. The
stream opens with a comment ``: log <id> last-seq <n>`` naming the node's event numbering
(a new id when its log starts over) and its newest sequence number.
A comment line every ``heartbeat`` seconds keeps proxies and dead-peer detection honest.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from engine.events import Event
from engine.server.context import node_of

HEARTBEAT_SECONDS = 15.0


def sse_frame(event: Event) -> bytes:
    data = json.dumps(event.to_dict(), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.type.value}\ndata: {data}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    raw = request.query.get("since", request.headers.get("Last-Event-ID", "0"))
    try:
        since = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"since must be an integer, got {raw!r}") from None
    follow = request.query.get("follow", "1") != "0"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    # First line: which numbering this is, so a follower that saw another one (the node
    # lost its log and starts again at 1) can tell and start over from the beginning.
    await response.write(f": log {node.events.log_id} last-seq {node.events.last_seq}\n\n"
                         .encode())
    subscription = node.events.subscribe() if follow else None
    try:
        last = since
        for event in node.events.since(since):
            await response.write(sse_frame(event))
            last = event.seq
        if subscription is None:
            return response
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    event = await subscription.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if event is None:  # bus closed (shutdown) or this client fell behind
                break
            if event.seq > last:
                await response.write(sse_frame(event))
                last = event.seq
    except ConnectionResetError:  # the client went away
        return response
    finally:
        if subscription is not None:
            subscription.close()
    return response
