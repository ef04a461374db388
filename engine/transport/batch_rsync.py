"""BatchRsync: many files to one host in one rsync run, each verified and published alone.

One run for a batch of push requests to one target:

1. ``HEAD /v1/objects/…`` for each file (``PROBE_CONCURRENCY`` at a time): versions the
   receiver already holds are done, nothing is sent for them;
2. a scratch directory of symlinks, each named for its file's staged name
   (``paths.staged_name``) and pointing at the bytes to send; rsync follows them (``-L``)
   and sends the rest with ``--files-from`` to the receiver's incoming directory, with the
   same resume (``--partial-dir``), stall bound and metered bandwidth as a single push
   (``RsyncTransport.run_rsync``); ``-ii`` with ``--out-format`` gives one line per file
   (bytes sent, ``0`` for a file already staged whole);
3. ``POST /v1/staged`` declares every file with a PUT's headers; the receiver hashes and
   publishes each on its own and answers per file.

A file rsync could not read (vanished, unreadable: exit 23 or 24) or the receiver refused
(not that version: 422) fails only itself. An ssh failure, a stall or a refused host key
fails the whole batch, each file with the same error.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

from engine.config import HostConfig
from engine.errors import describe
from engine.headers import (H_KEY, H_MTIME, H_ORIGIN, H_REASON, H_ROOT, H_SHA, H_SIZE,
                            H_SOURCE, H_URGENCY, H_VERIFIED)
from engine.paths import STATE_DIR, staged_name
from engine.transfers import Transfer
from engine.transport.base import PushRequest, PushResult, TransferError
from engine.transport.http import _error, error_kind
from engine.transport.rsync import RsyncTransport, _host_key_refused, _last_line
from engine.transport.rsync_version import OldRsync

PROBE_CONCURRENCY = 16
"""HEAD requests of one batch in flight at once."""

PUBLISH_FILES = 500
"""Files declared in one ``POST /v1/staged``."""

PARTIAL_EXITS = (23, 24)
"""rsync's exits for "some files were not transferred" and "some files vanished": the rest
arrived, and the receiver's verification says which."""

Outcome = PushResult | TransferError
"""One file's end in a batch."""

_batches = itertools.count(1)


class BatchRsync:
    """Pushes batches of files to one host at a time with one rsync run each."""

    def __init__(self, rsync: RsyncTransport, scratch: Path) -> None:
        self.rsync = rsync
        """The single-file transport whose ssh setup, version check and metered runs a batch
        uses."""
        self.scratch = scratch
        """Where each batch's directory of symlinks is made (the node's ssh control dir)."""
        self.totals = {"batches": 0, "files": 0, "failed_files": 0}

    async def push(self, requests: list[PushRequest],
                   transfers: list[Transfer]) -> list[Outcome]:
        """Push ``requests`` (all to one target), updating each one's transfer; one outcome
        per request, in order."""
        self.totals["batches"] += 1
        target = requests[0].target
        try:
            outcomes = await self._push(target, requests, transfers)
        except OldRsync as exc:
            outcomes = [TransferError(str(exc), retryable=False, target_fault=False)] \
                * len(requests)
        except TransferError as exc:
            outcomes = [exc] * len(requests)
        except aiohttp.ClientError as exc:
            outcomes = [TransferError(f"{target} unreachable: {describe(exc)}")] * len(requests)
        except asyncio.TimeoutError:
            outcomes = [TransferError(f"{target} timed out on a batch of {len(requests)}")] \
                * len(requests)
        self.totals["files"] += len(requests)
        self.totals["failed_files"] += sum(isinstance(o, TransferError) for o in outcomes)
        return outcomes

    async def _push(self, target: str, requests: list[PushRequest],
                    transfers: list[Transfer]) -> list[Outcome]:
        host = self.rsync.host_of(target)
        if host.ssh is None or host.ssh.host_key is None:
            raise TransferError(f"hosts.{host.name}.ssh (with host_key) is not set: cannot"
                                " rsync to it", retryable=False, target_fault=False)
        await self.rsync.check_versions(host)
        outcomes: list[Outcome | None] = list(await self._probe(requests))
        send = [i for i, o in enumerate(outcomes) if o is None]
        if not send:
            return outcomes  # type: ignore[return-value]
        sent = await self._send(host, [requests[i] for i in send], [transfers[i] for i in send])
        published = await self._publish([requests[i] for i in send])
        for i, outcome in zip(send, published):
            if isinstance(outcome, PushResult):
                outcome = PushResult(outcome.target, outcome.sha256, outcome.size,
                                     outcome.verified_at, outcome.already_present,
                                     sent.get(i, 0), outcome.root_id)
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    async def _probe(self, requests: list[PushRequest]) -> list[Outcome | None]:
        """What the receiver holds already (a result), else None: send it."""
        gate = asyncio.Semaphore(PROBE_CONCURRENCY)

        async def one(request: PushRequest) -> Outcome | None:
            art = request.artifact
            url = f"{request.target_url}/v1/objects/{art.data_type}/{quote(art.path)}"
            async with gate, self.rsync.session.head(
                    url, headers={H_SHA: art.sha256, H_ORIGIN: art.origin}) as resp:
                if resp.status == 200 and resp.headers.get(H_SHA) == art.sha256:
                    return PushResult(request.target, art.sha256, art.size,
                                      float(resp.headers.get(H_VERIFIED, time.time())), True,
                                      0, resp.headers.get(H_ROOT))
                if resp.status not in (200, 404):
                    raise await _error(resp, request.target, art.key)
                return None

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _send(self, host: HostConfig, requests: list[PushRequest],
                    transfers: list[Transfer]) -> dict[int, int]:
        """rsync the files in one run; bytes sent by position in ``requests``."""
        where = self.scratch / f"batch-{os.getpid()}-{next(_batches)}"
        names = [staged_name(r.artifact.data_type, r.artifact.path, r.artifact.sha256,
                             r.artifact.origin) for r in requests]
        by_name = {name: i for i, name in enumerate(names)}
        try:
            await asyncio.to_thread(_links, where, names,
                                    [r.source_file.absolute() for r in requests])
            remote = f"{self.rsync.ssh.destination(host)}:{host.data_root}/{STATE_DIR}/incoming/"
            size = sum(r.artifact.size for r in requests)
            async with self.rsync.bandwidth.allocate(
                    host.name, f"batch of {len(requests)} files ({size} bytes)") as alloc:
                code, out = await self.rsync.run_rsync(host, alloc, [
                    "--copy-links", "--chmod=F644", "-ii", "--out-format=%i|%n|%l|%b",
                    f"--files-from={where}.list", f"{where}/", remote])
        finally:
            await asyncio.to_thread(_unlink_links, where)
        if code != 0 and code not in PARTIAL_EXITS:
            raise TransferError(f"rsync to {host.name} exited {code}: {_last_line(out)}",
                                retryable=not _host_key_refused(out))
        sent: dict[int, int] = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 4 and parts[1] in by_name and parts[3].isdigit():
                i = by_name[parts[1]]
                sent[i] = int(parts[3])
                transfers[i].done = min(int(parts[3]), requests[i].artifact.size)
                transfers[i].offset = requests[i].artifact.size - transfers[i].done
        return sent

    async def _publish(self, requests: list[PushRequest]) -> list[Outcome]:
        """Ask the receiver to verify and publish each staged file; one outcome each (in
        requests of at most ``PUBLISH_FILES``, well under the receiver's 1 MiB body bound)."""
        outcomes: list[Outcome] = []
        for start in range(0, len(requests), PUBLISH_FILES):
            outcomes += await self._publish_some(requests[start:start + PUBLISH_FILES])
        return outcomes

    async def _publish_some(self, requests: list[PushRequest]) -> list[Outcome]:
        files = []
        for request in requests:
            art = request.artifact
            headers = {H_SIZE: str(art.size), H_SHA: art.sha256, H_SOURCE: self.rsync.node,
                       H_ORIGIN: art.origin, H_MTIME: f"{art.mtime:.6f}",
                       H_REASON: request.reason, H_URGENCY: request.urgency}
            if art.config_key:
                headers[H_KEY] = art.config_key
            files.append({"data_type": art.data_type, "path": art.path, "headers": headers})
        url = f"{requests[0].target_url}/v1/staged"
        async with self.rsync.session.post(url, json={"files": files}) as resp:
            if resp.status != 200:
                raise await _error(resp, requests[0].target, f"a batch of {len(files)}")
            results = (await resp.json())["results"]
        if len(results) != len(requests):
            raise TransferError(f"{requests[0].target} answered {len(results)} results for"
                                f" {len(requests)} files")
        return [_outcome(r, answer) for r, answer in zip(requests, results)]


def _outcome(request: PushRequest, answer: dict) -> Outcome:
    """One file's published answer as a result (its hash must be the version sent)."""
    art, status = request.artifact, int(answer.get("status", 0))
    if status not in (200, 201):
        retryable, target_fault = error_kind(status, None)
        return TransferError(f"{request.target} answered {status} for {art.key}:"
                             f" {answer.get('error')}", retryable=retryable,
                             target_fault=target_fault)
    if answer.get("sha256") != art.sha256 or answer.get("size") != art.size:
        return TransferError(f"{request.target} verified {answer.get('sha256')} but we sent"
                             f" {art.sha256}")
    return PushResult(request.target, answer["sha256"], answer["size"],
                      float(answer["verified_at"]), bool(answer.get("already_present")), 0,
                      answer.get("root_id"))


def _links(where: Path, names: list[str], sources: list[Path]) -> None:
    """A directory of symlinks ``names`` -> ``sources`` and its ``--files-from`` list."""
    where.mkdir(parents=True)
    for name, source in zip(names, sources):
        os.symlink(source, where / name)
    Path(f"{where}.list").write_text("".join(f"{name}\n" for name in names))


def _unlink_links(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
    Path(f"{where}.list").unlink(missing_ok=True)
