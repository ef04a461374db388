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

A live snapshot is checked the same way but never published nor counted: it replaces the
previous live snapshot of that (origin, path) under ``.ringsync/live/<origin>/`` and is
deleted when the finished artifact itself arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from engine import diskio
from engine.events import DataSyncCompleted, DataSyncFailed, ReplicaQuarantined
from engine.headers import (
    H_BACKPRESSURE, H_KEY, H_LIVE, H_MTIME, H_OFFSET, H_ORIGIN, H_REASON, H_ROOT, H_SHA,
    H_SIZE, H_SOURCE, H_URGENCY, H_VERIFIED, H_VERIFY)
from engine.manifest import Artifact, SyncReceipt
from engine.paths import UnsafePath
from engine.scanner import is_database
from engine.server.body import UploadStalled, receive_body
from engine.server.context import Storage, storage_of
from engine.sqlite_check import check_database_async
from engine.transfers import Transfer

_HEX = frozenset("0123456789abcdef")

log = logging.getLogger(__name__)


def _bad(status: type[web.HTTPException], message: str, **extra: object) -> web.HTTPException:
    return status(text=web.json_response({"error": message, **extra}).text,
                  content_type="application/json")


def _resolve(store: Storage, data_type: str, rel: str, sha: str | None,
             origin: str | None) -> tuple[str, str, Path]:
    """(data_type, path, where this node keeps it): the stored copy of ``origin``'s version
    ``sha``; without a version (a GET), this node's own source."""
    try:
        if sha is None:
            return data_type, rel, store.data.source_path(data_type, rel)
        return data_type, rel, store.data.copy_path(origin or "", data_type, rel, sha)
    except UnsafePath as exc:
        raise _bad(web.HTTPBadRequest, str(exc)) from None


def _origin(store: Storage, headers: Mapping[str, str]) -> str:
    """The node whose artifact this is: required, and a host of this cluster."""
    origin = headers.get(H_ORIGIN, "")
    if not origin:
        raise _bad(web.HTTPBadRequest, f"missing header {H_ORIGIN}: the artifact's origin node")
    if origin not in store.hosts:
        raise _bad(web.HTTPBadRequest, f"unknown origin {origin[:80]!r}")
    return origin


def _int_header(headers: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = headers.get(name)
    if raw is None:
        if default is None:
            raise _bad(web.HTTPBadRequest, f"missing header {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(web.HTTPBadRequest, f"header {name} is not an integer: {raw!r}") from None
    if value < 0:
        raise _bad(web.HTTPBadRequest, f"header {name} is negative")
    return value


def _sha_header(headers: Mapping[str, str]) -> str:
    sha = headers.get(H_SHA, "").lower()
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise _bad(web.HTTPBadRequest, f"header {H_SHA} must be 64 hex digits")
    return sha


def _live_origin(store: Storage, headers: Mapping[str, str]) -> str | None:
    """The sending node of a live snapshot (None for an ordinary upload); it must be a host
    of this cluster, since it names the directory the snapshot is kept in."""
    if headers.get(H_LIVE, "0").lower() not in ("1", "true"):
        return None
    origin = headers.get(H_ORIGIN) or headers.get(H_SOURCE, "")
    if origin not in store.hosts:
        raise _bad(web.HTTPBadRequest, f"live snapshot from unknown origin {origin!r}")
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
        raise _bad(web.HTTPNotFound, "no such object")
    return web.FileResponse(final, chunk_size=store.chunk_bytes)


def _receive_failed(store: Storage, source: str, artifact: str, error: str) -> None:
    """Every rejected or interrupted upload is an event (invariant 6)."""
    store.emit(DataSyncFailed(source=source, target=store.name, artifact=artifact,
                              error=error, attempt=0, retry_in_seconds=None,
                              reason="receive", strategy="receive"))


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
        raise _bad(web.HTTPBadRequest, f"offset {offset} beyond size {size}")
    if request.content_length is not None and request.content_length != size - offset:
        raise _bad(web.HTTPBadRequest,
                   f"Content-Length {request.content_length} != size - offset ({size - offset})")
    if live_origin is None and final.exists():
        verified_at = await _held(store, (origin, data_type, rel, sha), final, now=False)
        if verified_at is not None:
            await _drop_live(store, request.headers, data_type, rel)
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
        raise _bad(web.HTTPInsufficientStorage, f"{store.name} has no room for {size} bytes")
    part = store.data.partial_path(data_type, rel, sha, live_origin, origin)
    if part in store.uploads:
        raise _bad(web.HTTPConflict, f"an upload of {artifact_name} is already in progress")
    have = part.stat().st_size if part.exists() else 0
    if have != offset:
        raise _bad(web.HTTPConflict, f"resume offset {offset} != {have} bytes held", offset=have)

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
            _receive_failed(store, source, artifact_name, error)
            log.warning("%s from %s: %s", artifact_name, source, error)
            raise _bad(web.HTTPRequestTimeout, error) from None
        except diskio.DiskError as exc:
            raise _disk_failed(store, source, artifact_name, part, exc, transfer) from None
        except BaseException as exc:
            # The sender went away mid-body: keep the partial for resume; nothing is visible.
            error = (f"upload interrupted after {offset + transfer.done} of {size} bytes"
                     f" (partial kept for resume): {type(exc).__name__}")
            store.transfers.finish(transfer, error=error)
            _receive_failed(store, source, artifact_name, error)
            if isinstance(exc, Exception):  # reported above; not a server error worth a traceback
                raise _bad(web.HTTPBadRequest, error) from None
            raise

        received = offset + transfer.done
        return await accept_part(store, request.headers, part=part, digest=digest,
                                 received=received,
                                 size=size, sha=sha, origin=origin, data_type=data_type,
                                 rel=rel, final=final, transfer=transfer,
                                 live_origin=live_origin, transport="http")
    finally:
        store.uploads.discard(part)


async def accept_part(store: Storage, headers: Mapping[str, str], *, part: Path, digest: str,
                      received: int, size: int, sha: str, origin: str, data_type: str,
                      rel: str, final: Path, transfer: Transfer, live_origin: str | None,
                      transport: str) -> web.Response:
    """The one way received bytes become a copy, whatever carried them (an HTTP body, a
    file rsync staged): ``received`` bytes hashing to ``digest`` must be the declared size
    and SHA-256, a database must pass SQLite's check, then ``part`` is published atomically
    under ``final`` (or kept apart as a live snapshot) and registered. Anything else
    discards or quarantines it and answers 422 (409 when another copy won the race)."""
    source = headers.get(H_SOURCE, "unknown")
    artifact_name = f"{data_type}/{rel}"
    if received != size or digest != sha:
        part.unlink(missing_ok=True)
        error = (f"size mismatch: declared {size}, received {received}" if received != size
                 else f"sha256 mismatch: declared {sha}, received {digest}")
        store.transfers.finish(transfer, error=error)
        _receive_failed(store, source, artifact_name, error)
        raise _bad(web.HTTPUnprocessableEntity, error)
    if is_database(rel):
        result = await check_database_async(part, store.integrity_check_max_bytes)
        if not result.ok:
            raise await _reject_database(store, source, origin, data_type, rel, part, digest,
                                         result.describe(), transfer)
    if live_origin is not None:
        target = store.data.live_path(live_origin, data_type, rel)
        try:
            await asyncio.to_thread(diskio.replace_live, part, target)
        except diskio.DiskError as exc:
            raise _disk_failed(store, source, artifact_name, part, exc, transfer) from None
    else:
        try:
            await asyncio.to_thread(diskio.publish, part, final, store.data.root)
        except diskio.DiskError as exc:
            raise _disk_failed(store, source, artifact_name, part, exc, transfer) from None
        except FileExistsError:
            part.unlink(missing_ok=True)
            store.transfers.finish(transfer, error="lost a race with another upload")
            raise _bad(web.HTTPConflict,
                       f"{artifact_name} appeared during the upload") from None
    return await _stored(store, headers, origin, data_type, rel, size, sha, transfer,
                         live_origin, transport)


def _disk_failed(store: Storage, source: str, artifact_name: str, part: Path,
                 exc: diskio.DiskError, transfer: Transfer) -> web.HTTPException:
    """This node's disk failed on a part: discard it (never kept for a resume, never
    published), report it, and answer a retryable 507 (full) or 503 naming the errno."""
    try:
        part.unlink(missing_ok=True)
    except OSError:
        log.warning("cannot discard %s after a disk error", part, exc_info=True)
    error = f"{store.name} could not store {artifact_name}: {exc} (part discarded)"
    store.transfers.finish(transfer, error=error)
    _receive_failed(store, source, artifact_name, error)
    log.warning("%s from %s: %s", artifact_name, source, error)
    status = (web.HTTPInsufficientStorage if exc.status == 507
              else web.HTTPServiceUnavailable)
    return _bad(status, error, errno=exc.errno_name, op=exc.op)


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
        raise _bad(web.HTTPServiceUnavailable, f"cannot read the stored copy: {exc}") from None
    if actual == ident[3]:
        return at
    store.copies.quarantine(ident, final, actual)
    return None


async def _stored(store: Storage, headers: Mapping[str, str], origin: str, data_type: str,
                  rel: str,
                  size: int, sha: str, transfer: Transfer,
                  live_origin: str | None, transport: str) -> web.Response:
    """Record a verified arrival: a finished artifact is registered as a verified replica
    (and any live snapshot of it dropped); a live snapshot is only reported."""
    source = headers.get(H_SOURCE, "unknown")
    verified_at = time.time()
    store.transfers.finish(transfer)
    store.note_stored(size)
    if live_origin is None:
        try:
            mtime = float(headers.get(H_MTIME, verified_at))
        except ValueError:
            mtime = verified_at
        store.manifest.register_sync(
            SyncReceipt(data_type, rel, source, store.name, sha, size, verified_at, transport,
                        origin=origin, root_id=store.root_id),
            Artifact(data_type, rel, headers.get(H_KEY) or None, size, sha, mtime,
                     origin))
        await _drop_live(store, headers, data_type, rel)
    store.emit(DataSyncCompleted(source=source, target=store.name, files=1, bytes=size,
                                 artifacts=[f"{data_type}/{rel}"],
                                 reason=headers.get(H_REASON, "push"),
                                 urgency=("urgent" if headers.get(H_URGENCY)
                                          == "urgent" else "normal"),
                                 strategy="receive",
                                 seconds=round(time.time() - transfer.started, 3)))
    return web.json_response({"node": store.name, "root_id": store.root_id, "origin": origin,
                              "data_type": data_type, "path": rel,
                              "sha256": sha, "size": size, "verified_at": verified_at,
                              "already_present": False, "live": live_origin is not None},
                             status=201)


async def _reject_database(store: Storage, source: str, origin: str, data_type: str, rel: str,
                           part: Path,
                           digest: str, error: str, transfer: Transfer) -> web.HTTPException:
    """A database with the declared hash that SQLite finds unsound: quarantined, never
    published nor counted; reported as REPLICA_QUARANTINED and DATA_SYNC_FAILED."""
    artifact_name = f"{data_type}/{rel}"
    try:
        moved = await asyncio.to_thread(store.data.quarantine_file, data_type, f"{origin}/{rel}",
                                        part, digest)
        where: str | None = moved.relative_to(store.data.root).as_posix()
    except OSError:
        part.unlink(missing_ok=True)
        where = None
    store.transfers.finish(transfer, error=error)
    store.emit(ReplicaQuarantined(node=store.name, artifact=artifact_name,
                                  expected_sha256=digest, actual_sha256=digest,
                                  quarantined_to=where))
    _receive_failed(store, source, artifact_name, error)
    return _bad(web.HTTPUnprocessableEntity, f"{artifact_name}: {error}", quarantined_to=where)


async def _drop_live(store: Storage, headers: Mapping[str, str], data_type: str,
                     rel: str) -> None:
    """The finished artifact is here: its origin's live snapshot is no longer needed."""
    origin = headers.get(H_ORIGIN) or headers.get(H_SOURCE, "")
    if origin not in store.hosts:
        return
    try:
        live = store.data.live_path(origin, data_type, rel)
    except UnsafePath:
        return
    await asyncio.to_thread(live.unlink, missing_ok=True)


def add_routes(app: web.Application) -> None:
    app.router.add_route("HEAD", "/v1/objects/{data_type}/{path:.+}", head_object)
    app.router.add_get("/v1/objects/{data_type}/{path:.+}", get_object, allow_head=False)
    app.router.add_route("PUT", "/v1/objects/{data_type}/{path:.+}", put_object)
