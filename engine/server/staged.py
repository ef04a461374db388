"""``POST /v1/staged``: verify and publish files rsync put here; ``POST /v1/held``.

The rsync transports (``engine/transport/rsync.py``, ``batch_rsync.py``) write an
artifact's bytes over SSH to this node's ``DataRoot.staged_path`` (rsync's own partial stays
in ``incoming/.rsync-partial/`` until it is whole), then ask here for it to become a copy,
declaring it with the same headers as a ``PUT /v1/objects`` (size, SHA-256, origin, source,
mtime, config key). Nothing the sender or rsync says is trusted: this node reads the staged
file back, hashes and fsyncs it (``diskio.settle``), and it goes through the one acceptance
path of every upload (``accept.accept``: size and SHA-256, SQLite's check for databases,
atomic publish, registration). The staged file is first renamed to a name of this claim's
own (``<staged>.<token>.claimed``), so what is hashed is what is published: a second
sender's rsync of the same name afterwards makes a new file under the staged name and never
changes the claimed one (hashing by the staged name and then linking by it published
whatever was renamed over it in between). A claimed file nobody publishes goes back under
its staged name when its request ends, and one a crash left is taken by the next request
for that name (its bytes are hashed like any other). A request ends only once the threads
reading its files are done, also when it is cancelled (a node stopping): nothing renames a
file after its claim was let go.

- ``POST /v1/staged/{data_type}/{path}``, one file declared in the request's headers: the
  same answer as a PUT's (201 with this node's own hash, 200 ``already_present`` when it
  held that version already), 404 when nothing is staged, 422 when the bytes are not that
  version, 503/507 when this node's disk fails on them (the staged file is discarded).
- ``POST /v1/staged`` with ``{"files": [{"data_type", "path", "headers": {...}}, ...]}``
  (at most ``MAX_BATCH_FILES``): each file is published on its own, exactly as above, and
  the answer (200) lists one result per file in order: that answer's JSON with its
  ``status``. A failed file fails only itself. The batch shares what can be shared: one
  fsync per directory and one manifest transaction for all of its files.
- ``POST /v1/held`` with ``{"files": [{"data_type", "path", "sha256", "origin"}, ...]}``:
  which of those versions this node holds, one result each (``status`` 200 with
  ``sha256``, ``verified_at`` and ``root_id``, 404 not held, or a HEAD's error): a batch's
  probe in one request.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from engine import diskio
from engine.errors import describe
from engine.headers import H_ORIGIN, H_SHA, H_SIZE, H_SOURCE
from engine.paths import claimed_path
from engine.server.accept import Arrival, Outcome, accept, bad, disk_failed, drop_live
from engine.server.context import Storage, storage_of
from engine.server.objects import _held, _int_header, _named, _origin, _resolve, _sha_header
from engine.transfers import Transfer

T = TypeVar("T")

MAX_BATCH_FILES = 2000
"""Files one ``POST /v1/staged`` (or ``/v1/held``) may declare."""


SETTLE_THREADS = 4
"""Threads that read back, hash and fsync one batch's staged files (their reads and fsyncs
overlap), each taking a share of the files: one thread hop per share, not per file (a hop
each cost more than hashing a 64 KiB file)."""


async def publish_staged(request: web.Request) -> web.Response:
    store = storage_of(request)
    claim = await _claim(store, request.headers, *_named(request))
    if isinstance(claim, web.Response):
        return claim
    try:
        [arrival] = await _settle(store, [claim])
        if isinstance(arrival, web.HTTPException):
            raise arrival
        outcome = (await accept(store, [arrival]))[0]
    finally:
        _release(store, [claim])
    if isinstance(outcome, web.HTTPException):
        raise outcome
    return outcome


async def publish_batch(request: web.Request) -> web.Response:
    store = storage_of(request)
    items = await _declared(request)
    outcomes: list[Any] = []
    claims: list[_Claim] = []
    try:
        for data_type, rel, headers in items:
            outcomes.append(await _claim_one(store, headers, data_type, rel))
            if isinstance(outcomes[-1], _Claim):
                claims.append(outcomes[-1])
        claimed = [i for i, c in enumerate(outcomes) if isinstance(c, _Claim)]
        for i, arrival in zip(claimed, await _settle(store, claims)):
            outcomes[i] = arrival
        ready = [i for i in claimed if isinstance(outcomes[i], Arrival)]
        for i, outcome in zip(ready, await accept(store, [outcomes[i] for i in ready])):
            outcomes[i] = outcome
    finally:
        _release(store, claims)
    return web.json_response({"results": [_result(o) for o in outcomes]})


async def _claim_one(store: Storage, headers: Mapping[str, str], data_type: str,
                     rel: str) -> _Claim | Outcome:
    """One file of a batch claimed, or its own answer: already present, the HTTP error
    that says why not, or a 503 when this node's disk fails on it (never the batch's)."""
    try:
        return await _claim(store, headers, data_type, rel)
    except web.HTTPException as exc:
        return exc
    except OSError as exc:
        return bad(web.HTTPServiceUnavailable, f"{data_type}/{rel}: {describe(exc)}",
                   errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)))


async def held(request: web.Request) -> web.Response:
    """``POST /v1/held``: which of these versions this node holds, as one request instead
    of a HEAD each (a batch's probe before its rsync run)."""
    store = storage_of(request)
    items = await _files(request, '"data_type", "path", "sha256", "origin"', lambda f: (
        str(f["data_type"]), str(f["path"]), str(f["sha256"]), str(f["origin"])))
    return web.json_response({"results": [await _holds(store, *item) for item in items]})


async def _holds(store: Storage, data_type: str, rel: str, sha: str,
                 origin: str) -> dict[str, Any]:
    """One version's entry in ``/v1/held``'s answer: 200 held (when it was hashed), 404 not
    held, else the error a HEAD of it would get."""
    try:
        headers = {H_SHA: sha, H_ORIGIN: origin}
        sha, origin = _sha_header(headers), _origin(store, headers)
        data_type, rel, final = _resolve(store, data_type, rel, sha, origin)
        at = (await _held(store, (origin, data_type, rel, sha), final, now=False)
              if final.is_file() else None)
    except web.HTTPException as exc:
        return {"status": exc.status, **_error_of(exc)}
    if at is None:
        return {"status": 404}
    return {"status": 200, "sha256": sha, "verified_at": at, "root_id": store.root_id}


async def _declared(request: web.Request) -> list[tuple[str, str, CIMultiDict[str]]]:
    """The files a batch declares: (data_type, path, a PUT's headers) each."""
    return await _files(request, '"data_type", "path", "headers"', lambda f: (
        str(f["data_type"]), str(f["path"]),
        CIMultiDict({str(k): str(v) for k, v in f["headers"].items()})))


async def _files(request: web.Request, fields: str, item: Callable[[Any], T]) -> list[T]:
    """``{"files": [...]}`` of at most ``MAX_BATCH_FILES``, each made an item by ``item``;
    400 (naming ``fields``) or 413 otherwise."""
    try:
        files = (await request.json())["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
        items = [item(f) for f in files]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise bad(web.HTTPBadRequest, f'body must be {{"files": [{{{fields}}}, ...]}}:'
                  f" {type(exc).__name__} {exc}") from None
    if len(items) > MAX_BATCH_FILES:
        raise bad(web.HTTPRequestEntityTooLarge,
                  f"{len(items)} files in one request; at most {MAX_BATCH_FILES}")
    return items


@dataclass(frozen=True)
class _Missing:
    """Nothing is staged under the name (and no claimed file was left there)."""


@dataclass(frozen=True)
class _Failed:
    """This node's disk failed on the file: ``error``; the bytes to discard are at ``at``."""

    error: diskio.DiskError
    at: Path | None


_Settled = tuple[int, str] | _Missing | _Failed
"""A staged file read back: (size, SHA-256), or why it could not be."""


@dataclass
class _Claim:
    """A staged file this request publishes (its staged name held in ``store.uploads``
    until ``_release``), before it is read back."""

    headers: Mapping[str, str]
    size: int
    sha: str
    origin: str
    data_type: str
    rel: str
    final: Path
    staged: Path
    transfer: Transfer
    claimed: Path = field(init=False)
    """Where the staged file is moved before it is read back: this claim's own name."""
    reading: asyncio.Future[Any] | None = None
    """The thread reading it back, while it may still touch it."""

    def __post_init__(self) -> None:
        self.claimed = claimed_path(self.staged, secrets.token_hex(6))


async def _claim(store: Storage, headers: Mapping[str, str], data_type: str,
                 rel: str) -> _Claim | web.Response:
    """The staged file for the version ``headers`` declare, claimed for this request; the
    answer itself when this node holds that version already. Raises the HTTP error that
    says why not."""
    size, sha = _int_header(headers, H_SIZE), _sha_header(headers)
    origin = _origin(store, headers)
    data_type, rel, final = _resolve(store, data_type, rel, sha, origin)
    staged = store.data.staged_path(data_type, rel, sha, origin)
    if final.exists():
        verified_at = await _held(store, (origin, data_type, rel, sha), final, now=False)
        if verified_at is not None:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
            await drop_live(store, [(headers, data_type, rel)])
            return web.json_response({"node": store.name, "root_id": store.root_id,
                                      "origin": origin, "data_type": data_type, "path": rel,
                                      "sha256": sha, "size": size, "verified_at": verified_at,
                                      "already_present": True})
    if staged in store.uploads:
        raise bad(web.HTTPConflict, f"{data_type}/{rel} is being published already")
    store.uploads.add(staged)
    transfer = store.transfers.start(direction="in", source=headers.get(H_SOURCE, "unknown"),
                                     target=store.name, artifact=f"{data_type}/{rel}",
                                     size=size, transport="rsync")
    return _Claim(headers, size, sha, origin, data_type, rel, final, staged, transfer)


async def _settle(store: Storage, claims: list[_Claim]) -> list[Arrival | web.HTTPException]:
    """Each claimed file read back, hashed and fsynced (``diskio.settle``) in up to
    ``SETTLE_THREADS`` threads: its Arrival, or the HTTP error that says why not (404
    nothing staged; 503/507 a failing disk, the file discarded). Cancelled, the threads go
    on and each claim is let go only once its thread is done (``_release``)."""
    if not claims:
        return []
    step = -(-len(claims) // SETTLE_THREADS)
    shares = [claims[i:i + step] for i in range(0, len(claims), step)]
    work = []
    for share in shares:
        reading = asyncio.ensure_future(asyncio.to_thread(_settle_share, share))
        for claim in share:
            claim.reading = reading
        work.append(reading)
    done = await asyncio.shield(asyncio.gather(*work))
    settled = [result for results in done for result in results]
    return [_arrival(store, claim, result) for claim, result in zip(claims, settled)]


def _settle_share(claims: list[_Claim]) -> list[_Settled]:
    return [_take(claim) for claim in claims]


def _take(claim: _Claim) -> _Settled:
    """Move the staged file (or one a crash left claimed) to this claim's name, then read
    its size and its hash back (and fsync it) from there (blocking)."""
    try:
        os.rename(claim.staged, claim.claimed)
    except FileNotFoundError:
        left = sorted(claim.staged.parent.glob(claim.staged.name + ".*.claimed"))
        if not left:
            return _Missing()
        try:  # nobody holds it: this request has the staged name's claim
            os.rename(left[0], claim.claimed)
        except FileNotFoundError:
            return _Missing()
        except OSError as exc:
            return _Failed(diskio.DiskError("rename", exc), left[0])
    except OSError as exc:
        return _Failed(diskio.DiskError("rename", exc), claim.staged)
    try:
        return os.stat(claim.claimed).st_size, diskio.settle(claim.claimed)
    except diskio.DiskError as exc:
        return _Failed(exc, claim.claimed)
    except OSError as exc:  # reading it back failed (EIO)
        return _Failed(diskio.DiskError("read", exc), claim.claimed)


def _arrival(store: Storage, claim: _Claim, settled: _Settled) -> Arrival | web.HTTPException:
    name, source = f"{claim.data_type}/{claim.rel}", claim.headers.get(H_SOURCE, "unknown")
    if isinstance(settled, _Missing):
        store.transfers.finish(claim.transfer, error="nothing staged")
        return bad(web.HTTPNotFound, f"nothing staged for {name}")
    if isinstance(settled, _Failed):
        return disk_failed(store, source, name, settled.at or claim.claimed, settled.error,
                           claim.transfer)
    received, digest = settled
    claim.transfer.done = received
    return Arrival(claim.headers, claim.claimed, digest, received, claim.size, claim.sha,
                   claim.origin, claim.data_type, claim.rel, claim.final, claim.transfer,
                   None, "rsync")


def _release(store: Storage, claims: list[_Claim]) -> None:
    """The request is over: each staged name is free again once no thread reads its file
    any more (now, or when that thread is done); a transfer the request did not get to
    finish (it was cancelled, or failed on the way) is finished as such and its claimed
    file put back (``_unclaim``)."""
    for claim in claims:
        reading = claim.reading
        if reading is not None and not reading.done():
            reading.add_done_callback(lambda _done, c=claim: _let_go(store, c))
        else:
            _let_go(store, claim)


def _let_go(store: Storage, claim: _Claim) -> None:
    store.uploads.discard(claim.staged)
    if claim.transfer.finished is None:
        store.transfers.finish(claim.transfer, error="the request ended before it did")
        _unclaim(claim)


def _unclaim(claim: _Claim) -> None:
    """A claimed file the request did not get to publish goes back under its staged name
    (a retried POST publishes it without another rsync), unless a newer one is there; one
    that was published after all (the request ended inside the publish) is only a second
    name of the copy, and goes."""
    try:
        if claim.final.exists() and os.path.samefile(claim.claimed, claim.final):
            claim.claimed.unlink()
            return
        os.link(claim.claimed, claim.staged)
    except FileExistsError:
        pass
    except OSError:
        return  # never claimed, or the disk fails: the next claim or prune_partials takes it
    claim.claimed.unlink(missing_ok=True)


def _result(outcome: Outcome) -> dict[str, Any]:
    """One file's entry in a batch's answer: its answer's JSON with its ``status``."""
    if isinstance(outcome, web.HTTPException):
        return {"status": outcome.status, **_error_of(outcome)}
    assert isinstance(outcome, web.Response) and isinstance(outcome.body, bytes)
    return {"status": outcome.status, **json.loads(outcome.body)}


def _error_of(exc: web.HTTPException) -> dict[str, Any]:
    """The JSON body ``bad`` gave an HTTP error (its text when it has none)."""
    try:
        body = json.loads(exc.text or "{}")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"error": exc.text or exc.reason}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/held", held)
    app.router.add_post("/v1/staged", publish_batch)
    app.router.add_post("/v1/staged/{data_type}/{path:.+}", publish_staged)
