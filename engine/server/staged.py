"""``POST /v1/staged/{data_type}/{path}``: verify and publish a file rsync put here.

The rsync transport (``engine/transport/rsync.py``) writes an artifact's bytes over SSH to
this node's ``DataRoot.staged_path`` (rsync's own partial stays in
``incoming/.rsync-partial/`` until it is whole), then asks here, with the same headers as a
``PUT /v1/objects`` (size, SHA-256, origin, source, mtime, config key), for it to become a
copy. Nothing the sender or rsync says is trusted: this node hashes the staged file itself
and it goes through the one acceptance path of every upload (``objects.accept_part``: size
and SHA-256, SQLite's check for databases, atomic publish, registration). The answer is
the same as a PUT's: 201 with this node's own hash (200 ``already_present`` when it held
that version already), 404 when nothing is staged, 422 when the bytes are not that version.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from engine.hashing import sha256_file
from engine.headers import H_SIZE, H_SOURCE
from engine.server.context import storage_of
from engine.server.objects import (_bad, _drop_live, _held, _int_header, _origin, _resolve,
                                   _sha_header, accept_part)


async def publish_staged(request: web.Request) -> web.Response:
    store = storage_of(request)
    size, sha = _int_header(request, H_SIZE), _sha_header(request)
    origin = _origin(store, request)
    data_type, rel, final = _resolve(store, request, sha, origin)
    staged = store.data.staged_path(data_type, rel, sha, origin)
    if final.exists():
        verified_at = await _held(store, (origin, data_type, rel, sha), final, now=False)
        if verified_at is not None:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
            await _drop_live(store, request, data_type, rel)
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
    transfer = store.transfers.start(direction="in", source=request.headers.get(H_SOURCE,
                                                                                "unknown"),
                                     target=store.name, artifact=f"{data_type}/{rel}",
                                     size=size, transport="rsync")
    try:
        digest = await asyncio.to_thread(sha256_file, staged)
        transfer.done = received
        return await accept_part(store, request, part=staged, digest=digest, received=received,
                                 size=size, sha=sha, origin=origin, data_type=data_type,
                                 rel=rel, final=final, transfer=transfer, live_origin=None,
                                 transport="rsync")
    except FileNotFoundError:
        store.transfers.finish(transfer, error="the staged file vanished")
        raise _bad(web.HTTPNotFound, f"nothing staged for {data_type}/{rel}") from None
    finally:
        store.uploads.discard(staged)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/staged/{data_type}/{path:.+}", publish_staged)
