"""``POST /v1/staged``: verify and publish files rsync put here.

The rsync transports (``engine/transport/rsync.py``, ``batch_rsync.py``) write an
artifact's bytes over SSH to this node's ``DataRoot.staged_path`` (rsync's own partial stays
in ``incoming/.rsync-partial/`` until it is whole), then ask here for it to become a copy,
declaring it with the same headers as a ``PUT /v1/objects`` (size, SHA-256, origin, source,
mtime, config key). Nothing the sender or rsync says is trusted: this node hashes the
staged file itself and it goes through the one acceptance path of every upload
(``objects.accept_part``: size and SHA-256, SQLite's check for databases, atomic publish,
registration).

- ``POST /v1/staged/{data_type}/{path}``, one file declared in the request's headers: the
  same answer as a PUT's (201 with this node's own hash, 200 ``already_present`` when it
  held that version already), 404 when nothing is staged, 422 when the bytes are not that
  version.
- ``POST /v1/staged`` with ``{"files": [{"data_type", "path", "headers": {...}}, ...]}``
  (at most ``MAX_BATCH_FILES``): each file is published on its own, exactly as above, and
  the answer (200) lists one result per file in order: that answer's JSON with its
  ``status``. A failed file fails only itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from engine.hashing import sha256_file
from engine.headers import H_SIZE, H_SOURCE
from engine.server.context import Storage, storage_of
from engine.server.objects import (_bad, _drop_live, _held, _int_header, _named, _origin,
                                   _resolve, _sha_header, accept_part)

MAX_BATCH_FILES = 2000
"""Files one ``POST /v1/staged`` may declare."""

PUBLISH_CONCURRENCY = 8
"""Files of one batch verified and published at once (their hashing and fsyncs overlap)."""


async def publish_staged(request: web.Request) -> web.Response:
    return await publish_one(storage_of(request), request.headers, *_named(request))


async def publish_batch(request: web.Request) -> web.Response:
    store = storage_of(request)
    try:
        files = (await request.json())["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
        items = [(str(f["data_type"]), str(f["path"]), CIMultiDict(
            {str(k): str(v) for k, v in f["headers"].items()})) for f in files]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _bad(web.HTTPBadRequest, 'body must be {"files": [{"data_type", "path",'
                   f' "headers"}}, ...]}}: {type(exc).__name__} {exc}') from None
    if len(items) > MAX_BATCH_FILES:
        raise _bad(web.HTTPRequestEntityTooLarge,
                   f"{len(items)} files in one batch; at most {MAX_BATCH_FILES}")
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    async def one(data_type: str, rel: str, headers: Mapping[str, str]) -> dict[str, Any]:
        async with gate:
            try:
                resp = await publish_one(store, headers, data_type, rel)
            except web.HTTPException as exc:
                return {"status": exc.status, **_error_of(exc)}
            return {"status": resp.status, **json.loads(resp.body)}

    results = await asyncio.gather(*(one(*item) for item in items))
    return web.json_response({"results": results})


async def publish_one(store: Storage, headers: Mapping[str, str], data_type: str,
                      rel: str) -> web.Response:
    """Verify the file staged for the version ``headers`` declare and publish it; raises
    the HTTP error that says why not."""
    size, sha = _int_header(headers, H_SIZE), _sha_header(headers)
    origin = _origin(store, headers)
    data_type, rel, final = _resolve(store, data_type, rel, sha, origin)
    staged = store.data.staged_path(data_type, rel, sha, origin)
    if final.exists():
        verified_at = await _held(store, (origin, data_type, rel, sha), final, now=False)
        if verified_at is not None:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
            await _drop_live(store, headers, data_type, rel)
            return web.json_response({"node": store.name, "root_id": store.root_id,
                                      "origin": origin, "data_type": data_type, "path": rel,
                                      "sha256": sha, "size": size, "verified_at": verified_at,
                                      "already_present": True})
    if staged in store.uploads:
        raise _bad(web.HTTPConflict, f"{data_type}/{rel} is being published already")
    try:
        received = (await asyncio.to_thread(staged.stat)).st_size
    except FileNotFoundError:
        raise _bad(web.HTTPNotFound, f"nothing staged for {data_type}/{rel}") from None
    store.uploads.add(staged)
    transfer = store.transfers.start(direction="in", source=headers.get(H_SOURCE, "unknown"),
                                     target=store.name, artifact=f"{data_type}/{rel}",
                                     size=size, transport="rsync")
    try:
        digest = await asyncio.to_thread(sha256_file, staged)
        transfer.done = received
        return await accept_part(store, headers, part=staged, digest=digest,
                                 received=received, size=size, sha=sha, origin=origin,
                                 data_type=data_type, rel=rel, final=final,
                                 transfer=transfer, live_origin=None, transport="rsync")
    except FileNotFoundError:
        store.transfers.finish(transfer, error="the staged file vanished")
        raise _bad(web.HTTPNotFound, f"nothing staged for {data_type}/{rel}") from None
    finally:
        store.uploads.discard(staged)


def _error_of(exc: web.HTTPException) -> dict[str, Any]:
    """The JSON body ``_bad`` gave an HTTP error (its text when it has none)."""
    try:
        body = json.loads(exc.text or "{}")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"error": exc.text or exc.reason}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/staged", publish_batch)
    app.router.add_post("/v1/staged/{data_type}/{path:.+}", publish_staged)
