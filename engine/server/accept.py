"""The one way received bytes become a copy, for one upload or a batch of staged files.

Whatever carried the bytes (an HTTP body, rsync into the incoming area), they arrive as a
part: a file under ``.ringsync/incoming/`` this node has read back and hashed itself, and
that is on disk (the HTTP body is fsynced as it is received, a staged file when it is
hashed). ``accept`` turns a list of such ``Arrival``s into copies, each on its own:

1. the bytes this node hashed must be the declared size and SHA-256, and a SQLite database
   must pass its integrity check (else discarded or quarantined: 422);
2. each part is linked under its final name, never over an existing file (409 when another
   copy won the race), and every directory that gained a name is fsynced once for the
   whole batch (a failing disk: the part is discarded, 503/507 naming the errno); a live
   snapshot instead replaces its origin's previous one;
3. every published file is registered as this node's verified replica in one manifest
   transaction, and each is reported by its own DATA_SYNC_COMPLETED.

One arrival's failure is its own: the others are published. ``accept_part`` is the
one-file case (it raises the HTTP error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from engine import diskio
from engine.events import DataSyncCompleted, DataSyncFailed, ReplicaQuarantined
from engine.headers import H_KEY, H_MTIME, H_ORIGIN, H_REASON, H_SOURCE, H_URGENCY
from engine.manifest import Artifact, SyncReceipt
from engine.paths import UnsafePath
from engine.scanner import is_database
from engine.server.context import Storage
from engine.sqlite_check import check_database_async
from engine.transfers import Transfer

log = logging.getLogger(__name__)

Outcome = web.Response | web.HTTPException
"""One arrival's answer: its response, or the HTTP error that says why not."""


@dataclass(frozen=True)
class Arrival:
    """Bytes received for one version, read back and hashed by this node."""

    headers: Mapping[str, str]
    """The version as its sender declared it (a PUT's headers)."""
    part: Path
    """Where the bytes are (under ``.ringsync/incoming/``)."""
    digest: str
    """The SHA-256 this node computed over them."""
    received: int
    """How many bytes there are."""
    size: int
    """The declared size."""
    sha: str
    """The declared SHA-256."""
    origin: str
    data_type: str
    rel: str
    final: Path
    """Where the copy of this version lives once published."""
    transfer: Transfer
    """The inbound transfer the dashboard shows (finished here)."""
    live_origin: str | None = None
    """The sending node of a live snapshot (never published nor counted); None otherwise."""
    transport: str = "http"

    @property
    def name(self) -> str:
        return f"{self.data_type}/{self.rel}"

    @property
    def source(self) -> str:
        return self.headers.get(H_SOURCE, "unknown")


def bad(status: type[web.HTTPException], message: str, **extra: object) -> web.HTTPException:
    """An HTTP error whose JSON body is ``{"error": message, **extra}``."""
    return status(text=web.json_response({"error": message, **extra}).text,
                  content_type="application/json")


def receive_failed(store: Storage, source: str, artifact: str, error: str) -> None:
    """Every rejected or interrupted upload is an event (invariant 6)."""
    store.emit(DataSyncFailed(source=source, target=store.name, artifact=artifact,
                              error=error, attempt=0, retry_in_seconds=None,
                              reason="receive", strategy="receive"))


async def accept_part(store: Storage, arrival: Arrival) -> web.Response:
    """Accept one arrival; raises the HTTP error that says why not."""
    outcome = (await accept(store, [arrival]))[0]
    if isinstance(outcome, web.HTTPException):
        raise outcome
    return outcome


async def accept(store: Storage, arrivals: list[Arrival]) -> list[Outcome]:
    """Accept each arrival on its own (module docstring); one outcome each, in order."""
    outcomes: list[Outcome | None] = [None] * len(arrivals)
    publish: list[int] = []
    for i, arrival in enumerate(arrivals):
        try:
            await _check(store, arrival)
            if arrival.live_origin is not None:
                await _replace_live(store, arrival)
            else:
                publish.append(i)
        except web.HTTPException as exc:
            outcomes[i] = exc
    results = await asyncio.to_thread(
        diskio.publish_all, [(arrivals[i].part, arrivals[i].final) for i in publish],
        store.data.root)
    published = []
    for i, error in zip(publish, results):
        if error is None:
            published.append(i)
        elif isinstance(error, FileExistsError):
            arrivals[i].part.unlink(missing_ok=True)
            store.transfers.finish(arrivals[i].transfer, error="lost a race with another upload")
            outcomes[i] = bad(web.HTTPConflict, f"{arrivals[i].name} appeared during the upload")
        else:
            outcomes[i] = disk_failed(store, arrivals[i].source, arrivals[i].name,
                                      arrivals[i].part, error, arrivals[i].transfer)
    verified_at = time.time()
    if published:
        store.manifest.register_syncs([_receipt(store, arrivals[i], verified_at)
                                       for i in published])
    await drop_live(store, [(arrivals[i].headers, arrivals[i].data_type, arrivals[i].rel)
                            for i in published])
    for i, arrival in enumerate(arrivals):
        if outcomes[i] is None:
            outcomes[i] = _stored(store, arrival, verified_at)
    return outcomes  # type: ignore[return-value]


async def _check(store: Storage, arrival: Arrival) -> None:
    """The bytes must be the declared version (and a sound database); raises 422."""
    if arrival.received != arrival.size or arrival.digest != arrival.sha:
        arrival.part.unlink(missing_ok=True)
        error = (f"size mismatch: declared {arrival.size}, received {arrival.received}"
                 if arrival.received != arrival.size else
                 f"sha256 mismatch: declared {arrival.sha}, received {arrival.digest}")
        store.transfers.finish(arrival.transfer, error=error)
        receive_failed(store, arrival.source, arrival.name, error)
        raise bad(web.HTTPUnprocessableEntity, error)
    if is_database(arrival.rel):
        result = await check_database_async(arrival.part, store.integrity_check_max_bytes)
        if not result.ok:
            raise await _reject_database(store, arrival, result.describe())


async def _replace_live(store: Storage, arrival: Arrival) -> None:
    assert arrival.live_origin is not None
    target = store.data.live_path(arrival.live_origin, arrival.data_type, arrival.rel)
    try:
        await asyncio.to_thread(diskio.replace_live, arrival.part, target)
    except diskio.DiskError as exc:
        raise disk_failed(store, arrival.source, arrival.name, arrival.part, exc,
                          arrival.transfer) from None


def disk_failed(store: Storage, source: str, artifact_name: str, part: Path,
                exc: diskio.DiskError, transfer: Transfer) -> web.HTTPException:
    """This node's disk failed on a part: discard it (never kept for a resume, never
    published), report it, and answer a retryable 507 (full) or 503 naming the errno."""
    try:
        part.unlink(missing_ok=True)
    except OSError:
        log.warning("cannot discard %s after a disk error", part, exc_info=True)
    error = f"{store.name} could not store {artifact_name}: {exc} (part discarded)"
    store.transfers.finish(transfer, error=error)
    receive_failed(store, source, artifact_name, error)
    log.warning("%s from %s: %s", artifact_name, source, error)
    status = (web.HTTPInsufficientStorage if exc.status == 507
              else web.HTTPServiceUnavailable)
    return bad(status, error, errno=exc.errno_name, op=exc.op)


def _receipt(store: Storage, arrival: Arrival,
             verified_at: float) -> tuple[SyncReceipt, Artifact]:
    headers = arrival.headers
    try:
        mtime = float(headers.get(H_MTIME, verified_at))
    except ValueError:
        mtime = verified_at
    return (SyncReceipt(arrival.data_type, arrival.rel, arrival.source, store.name,
                        arrival.sha, arrival.size, verified_at, arrival.transport,
                        origin=arrival.origin, root_id=store.root_id),
            Artifact(arrival.data_type, arrival.rel, headers.get(H_KEY) or None, arrival.size,
                     arrival.sha, mtime, arrival.origin))


def _stored(store: Storage, arrival: Arrival, verified_at: float) -> web.Response:
    """Report a verified arrival."""
    headers = arrival.headers
    store.transfers.finish(arrival.transfer)
    store.note_stored(arrival.size)
    live = arrival.live_origin is not None
    store.emit(DataSyncCompleted(source=arrival.source, target=store.name, files=1,
                                 bytes=arrival.size, artifacts=[arrival.name],
                                 reason=headers.get(H_REASON, "push"),
                                 urgency=("urgent" if headers.get(H_URGENCY)
                                          == "urgent" else "normal"),
                                 strategy="receive",
                                 seconds=round(time.time() - arrival.transfer.started, 3)))
    return web.json_response({"node": store.name, "root_id": store.root_id,
                              "origin": arrival.origin, "data_type": arrival.data_type,
                              "path": arrival.rel, "sha256": arrival.sha,
                              "size": arrival.size, "verified_at": verified_at,
                              "already_present": False, "live": live}, status=201)


async def _reject_database(store: Storage, arrival: Arrival, error: str) -> web.HTTPException:
    """A database with the declared hash that SQLite finds unsound: quarantined, never
    published nor counted; reported as REPLICA_QUARANTINED and DATA_SYNC_FAILED."""
    try:
        moved = await asyncio.to_thread(store.data.quarantine_file, arrival.data_type,
                                        f"{arrival.origin}/{arrival.rel}", arrival.part,
                                        arrival.digest)
        where: str | None = moved.relative_to(store.data.root).as_posix()
    except OSError:
        arrival.part.unlink(missing_ok=True)
        where = None
    store.transfers.finish(arrival.transfer, error=error)
    store.emit(ReplicaQuarantined(node=store.name, artifact=arrival.name,
                                  expected_sha256=arrival.digest, actual_sha256=arrival.digest,
                                  quarantined_to=where))
    receive_failed(store, arrival.source, arrival.name, error)
    return bad(web.HTTPUnprocessableEntity, f"{arrival.name}: {error}", quarantined_to=where)


async def drop_live(store: Storage,
                    arrived: list[tuple[Mapping[str, str], str, str]]) -> None:
    """These finished artifacts (headers, data_type, path) are here: their origins' live
    snapshots are no longer needed (one thread hop for all of them)."""
    paths = []
    for headers, data_type, rel in arrived:
        origin = headers.get(H_ORIGIN) or headers.get(H_SOURCE, "")
        if origin in store.hosts:
            try:
                paths.append(store.data.live_path(origin, data_type, rel))
            except UnsafePath:
                continue
    if paths:
        await asyncio.to_thread(_unlink_all, paths)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
