"""``/v1/objects/{data_type}/{path}``: verified, resumable receive; HEAD; GET with Range.

Upload protocol (one PUT per attempt):
    X-Ringsync-Size     total bytes of the object
    X-Ringsync-Sha256   SHA-256 of the whole object (hex)
    X-Ringsync-Offset   bytes the sender skips because the receiver already has them
    X-Ringsync-Origin   the node whose artifact it is (required): with the path and the
                        SHA-256 it names the version, stored as ``<data_type>/@<origin>/...v<sha16>``
    X-Ringsync-Source / -Config-Key / -Mtime / -Reason   provenance
    X-Ringsync-Live     1: a live snapshot of a database its origin is still writing
The body streams into ``.ringsync/incoming/<key>.part`` while being hashed; only when
size and hash match is the part fsynced and linked to its final name (never over an
existing file; the directories it creates are fsynced up to the data root). A copy already
under that name whose bytes no longer match (bit rot) is quarantined and the upload repairs it. A SQLite database must also pass ``PRAGMA integrity_check`` (``quick_check``
above ``transfer.integrity_check_max_bytes``) first; one that does not is moved to the
quarantine (REPLICA_QUARANTINED) and answered 422. ``HEAD`` tells a sender what is there:
200 with the stored hash, 404 with ``X-Ringsync-Offset`` = bytes of a partial upload it
may resume, or 409 while another upload of the same object is still running.

A sender that stops sending mid-body (no FIN, no RST) frees the upload after
``UPLOAD_IDLE_SECONDS`` without a byte (``engine/server/body.py``): the partial is kept for a
resume and the answer is 408. A failing disk here (an OSError writing, fsyncing or linking
the part) discards the part (after a failed fsync its bytes cannot be trusted), never
publishes it, and answers a retryable 507 (ENOSPC, EDQUOT) or 503 (EIO, anything else) whose
JSON body names the errno.

The checks and the publishing are ``engine/server/accept.py``'s, shared with files rsync
staged. A live snapshot is checked the same way but never published nor counted: it replaces the
previous live snapshot of that (origin, path) under ``.ringsync/live/<origin>/`` and is
deleted when the finished artifact itself arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from engine import diskio
from engine.headers import (
    H_BACKPRESSURE, H_LIVE, H_OFFSET, H_ORIGIN, H_ROOT, H_SHA, H_SIZE, H_SOURCE, H_URGENCY,
    H_VERIFIED, H_VERIFY)
from engine.paths import UnsafePath
from engine.server.accept import (Arrival, accept_part, bad, disk_failed, drop_live,
                                  receive_failed)
from engine.server.body import UploadStalled, receive_body
from engine.server.context import Storage, storage_of

_HEX = frozenset("0123456789abcdef")

log = logging.getLogger(__name__)


def _resolve(store: Storage, data_type: str, rel: str, sha: str | None,
             origin: str | None) -> tuple[str, str, Path]:
    """(data_type, path, where this node keeps it): the stored copy of ``origin``'s version
    ``sha``; without a version (a GET), this node's own source."""
    try:
        if sha is None:
            return data_type, rel, store.data.source_path(data_type, rel)
        return data_type, rel, store.data.copy_path(origin or "", data_type, rel, sha)
    except UnsafePath as exc:
        raise bad(web.HTTPBadRequest, str(exc)) from None


def _origin(store: Storage, headers: Mapping[str, str]) -> str:
    """The node whose artifact this is: required, and a host of this cluster."""
    origin = headers.get(H_ORIGIN, "")
    if not origin:
        raise bad(web.HTTPBadRequest, f"missing header {H_ORIGIN}: the artifact's origin node")
    if origin not in store.hosts:
        raise bad(web.HTTPBadRequest, f"unknown origin {origin[:80]!r}")
    return origin


def _int_header(headers: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = headers.get(name)
    if raw is None:
        if default is None:
            raise bad(web.HTTPBadRequest, f"missing header {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(web.HTTPBadRequest, f"header {name} is not an integer: {raw!r}") from None
    if value < 0:
        raise bad(web.HTTPBadRequest, f"header {name} is negative")
    return value


def _sha_header(headers: Mapping[str, str]) -> str:
    sha = headers.get(H_SHA, "").lower()
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise bad(web.HTTPBadRequest, f"header {H_SHA} must be 64 hex digits")
    return sha


def _live_origin(store: Storage, headers: Mapping[str, str]) -> str | None:
    """The sending node of a live snapshot (None for an ordinary upload); it must be a host
    of this cluster, since it names the directory the snapshot is kept in."""
    if headers.get(H_LIVE, "0").lower() not in ("1", "true"):
        return None
    origin = headers.get(H_ORIGIN) or headers.get(H_SOURCE, "")
    if origin not in store.hosts:
        raise bad(web.HTTPBadRequest, f"live snapshot from unknown origin {origin!r}")
    return origin


def _named(request: web.Request) -> tuple[str, str]:
    """The (data_type, path) a request's URL names."""
    return request.match_info["data_type"], request.match_info["path"]


async def head_object(request: web.Request) -> web.Response:
    store = storage_of(request)
    live_origin = _live_origin(store, request.headers)
    sha = _sha_header(request.headers)
    origin = _origin(store, request.headers) if live_origin is None else live_origin
    data_type, rel, final = _resolve(store, *_named(request), sha, origin)
    if live_origin is None and final.is_file():
        held = await _held(store, (origin, data_type, rel, sha), final,
                           now=request.headers.get(H_VERIFY) == "now")
        if held is not None:
            return web.Response(status=200, headers={
                H_SHA: sha, H_VERIFIED: f"{held:.6f}", H_SIZE: str(final.stat().st_size),
                H_ROOT: store.root_id})
    headers = {H_OFFSET: "0"}
    if sha:
        part = store.data.partial_path(data_type, rel, sha, live_origin, origin)
        if part in store.uploads:  # its size is still moving: ask again later
            return web.Response(status=409)
        if part.exists():
            headers[H_OFFSET] = str(part.stat().st_size)
    return web.Response(status=404, headers=headers)


async def get_object(request: web.Request) -> web.StreamResponse:
    """``?origin=O&sha256=S``: the stored copy of that version; without: the own source."""
    store = storage_of(request)
    sha = request.query.get("sha256")
    _data_type, _rel, final = _resolve(store, *_named(request), sha.lower() if sha else None,
                                       request.query.get("origin", store.name))
    if not final.is_file():
        raise bad(web.HTTPNotFound, "no such object")
    return web.FileResponse(final, chunk_size=store.chunk_bytes)


async def put_object(request: web.Request) -> web.Response:
    store = storage_of(request)
    size, sha = _int_header(request.headers, H_SIZE), _sha_header(request.headers)
    live_origin = _live_origin(store, request.headers)
    origin = _origin(store, request.headers) if live_origin is None else live_origin
    data_type, rel, final = _resolve(store, *_named(request), sha, origin)
    offset = _int_header(request.headers, H_OFFSET, 0)
    source = request.headers.get(H_SOURCE, "unknown")
    artifact_name = f"{data_type}/{rel}"
    if offset > size:
        raise bad(web.HTTPBadRequest, f"offset {offset} beyond size {size}")
    if request.content_length is not None and request.content_length != size - offset:
        raise bad(web.HTTPBadRequest,
                   f"Content-Length {request.content_length} != size - offset ({size - offset})")
    if live_origin is None and final.exists():
        verified_at = await _held(store, (origin, data_type, rel, sha), final, now=False)
        if verified_at is not None:
            await drop_live(store, [(request.headers, data_type, rel)])
            return web.json_response({"node": store.name, "root_id": store.root_id,
                                      "origin": origin, "data_type": data_type, "path": rel,
                                      "sha256": sha, "size": size, "verified_at": verified_at,
                                      "already_present": True})
        # the copy under this version's name had rotted: quarantined by _held, repaired now
    pressure = store.refuses(request.headers.get(H_URGENCY) == "urgent")
    if pressure is not None:
        raise web.HTTPServiceUnavailable(
            text=web.json_response({"error": f"{store.name} holds normal syncs: backpressure"
                                             f" ({pressure})"}).text,
            content_type="application/json",
            headers={H_BACKPRESSURE: pressure, "Retry-After": "5"})
    if not store.has_room_for(size - offset):
        raise bad(web.HTTPInsufficientStorage, f"{store.name} has no room for {size} bytes")
    part = store.data.partial_path(data_type, rel, sha, live_origin, origin)
    if part in store.uploads:
        raise bad(web.HTTPConflict, f"an upload of {artifact_name} is already in progress")
    have = part.stat().st_size if part.exists() else 0
    if have != offset:
        raise bad(web.HTTPConflict, f"resume offset {offset} != {have} bytes held", offset=have)

    store.uploads.add(part)  # until published or rejected: no second upload meanwhile
    transfer = store.transfers.start(direction="in", source=source, target=store.name,
                                     artifact=artifact_name, size=size, transport="http",
                                     offset=offset)
    try:
        try:
            digest = await receive_body(request, part, offset, size,
                                        store.chunk_bytes, transfer)
        except web.HTTPException as exc:
            store.transfers.finish(transfer, error=exc.text or exc.reason)
            raise
        except UploadStalled as exc:
            # The sender is silent but the connection still open (a vanished host): free
            # the upload now, not at TCP keepalive; the partial stays for a resume.
            error = (f"upload stalled after {offset + transfer.done} of {size} bytes: {exc}"
                     " (partial kept for resume)")
            store.transfers.finish(transfer, error=error)
            receive_failed(store, source, artifact_name, error)
            log.warning("%s from %s: %s", artifact_name, source, error)
            raise bad(web.HTTPRequestTimeout, error) from None
        except diskio.DiskError as exc:
            raise disk_failed(store, source, artifact_name, part, exc, transfer) from None
        except BaseException as exc:
            # The sender went away mid-body: keep the partial for resume; nothing is visible.
            error = (f"upload interrupted after {offset + transfer.done} of {size} bytes"
                     f" (partial kept for resume): {type(exc).__name__}")
            store.transfers.finish(transfer, error=error)
            receive_failed(store, source, artifact_name, error)
            if isinstance(exc, Exception):  # reported above; not a server error worth a traceback
                raise bad(web.HTTPBadRequest, error) from None
            raise

        received = offset + transfer.done
        return await accept_part(store, Arrival(
            request.headers, part, digest, received, size, sha, origin, data_type, rel, final,
            transfer, live_origin, "http"))
    finally:
        store.uploads.discard(part)


async def _held(store: Storage, ident: tuple[str, str, str, str], final: Path,
                now: bool) -> float | None:
    """When this node's copy of ``ident`` was hashed, if its bytes are that version (cached
    while the file's identity is unchanged, unless ``now``); a copy that no longer matches
    is quarantined (None)."""
    try:
        actual, at = await store.copies.verify(ident, final, now=now)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise bad(web.HTTPServiceUnavailable, f"cannot read the stored copy: {exc}") from None
    if actual == ident[3]:
        return at
    store.copies.quarantine(ident, final, actual)
    return None


def add_routes(app: web.Application) -> None:
    app.router.add_route("HEAD", "/v1/objects/{data_type}/{path:.+}", head_object)
    app.router.add_get("/v1/objects/{data_type}/{path:.+}", get_object, allow_head=False)
    app.router.add_route("PUT", "/v1/objects/{data_type}/{path:.+}", put_object)
