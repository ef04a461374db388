"""BatchRsync: many files to one host in one rsync run, each verified and published alone.

One run for a batch of push requests to one target:

1. ``POST /v1/held`` asks which of the batch's versions the receiver holds already: those
   are done, nothing is sent for them;
2. a scratch directory of symlinks (on a tmpfs when the machine has one: ``link_scratch``),
   each named for its file's staged name
   (``paths.staged_name``) and pointing at the bytes to send; rsync follows them (``-L``)
   and sends the rest with ``--files-from`` to the receiver's incoming directory, with the
   same resume (``--partial-dir``), stall bound and metered bandwidth as a single push
   (``RsyncTransport.run_rsync``); ``-ii`` with ``--out-format`` gives one line per file
   (bytes sent, ``0`` for a file already staged whole);
3. ``POST /v1/staged`` declares files with a PUT's headers; the receiver reads back, hashes,
   fsyncs and publishes each on its own and answers per file. This overlaps the run: each
   time rsync has listed ``EARLY_FILES`` files, those are published while it goes on (one
   the receiver has not renamed into place yet is asked again after the run); the rest
   once it has exited.

A file rsync could not read (vanished, unreadable: exit 23 or 24) or the receiver refused
(not that version: 422) fails only itself. An ssh failure, a stall or a refused host key
fails the whole batch, each file with the same error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from engine.config import HostConfig
from engine.errors import describe
from engine.headers import (H_KEY, H_MTIME, H_ORIGIN, H_REASON, H_SHA, H_SIZE, H_SOURCE,
                            H_URGENCY)
from engine.paths import STATE_DIR, staged_name
from engine.transfers import Transfer
from engine.transport.base import PushRequest, PushResult, TransferError
from engine.transport.http import _error, error_kind
from engine.transport.rsync import RsyncTransport, _host_key_refused, _last_line
from engine.transport.rsync_version import OldRsync

log = logging.getLogger(__name__)

PUBLISH_FILES = 500
"""Files declared in one ``POST /v1/held`` or ``POST /v1/staged`` (well under the
receiver's 1 MiB body bound)."""

PARTIAL_EXITS = (23, 24)
"""rsync's exits for "some files were not transferred" and "some files vanished": the rest
arrived, and the receiver's verification says which."""

Outcome = PushResult | TransferError
"""One file's end in a batch."""

LINK_SCRATCH = Path("/dev/shm")
"""The tmpfs a batch's symlinks go to when the machine has one (``link_scratch``)."""

SCRATCH_PREFIX = "ringsync-batch-"
"""A batch directory's name: this prefix, the pid namespace, the node's pid, a random
part."""

LIST = ".files"
"""The ``--files-from`` list inside a batch directory."""

EARLY_FILES = 100
"""While rsync runs, files it is through with are published in groups of at least this
many."""


@dataclass
class _Sending:
    """One rsync run of a batch and what became of each of its files (by position)."""

    requests: list[PushRequest]
    transfers: list[Transfer]
    outcomes: list[Outcome | None] = field(default_factory=list)
    sent: dict[int, int] = field(default_factory=dict)
    """Bytes rsync sent per file, for each file it is through with."""
    pending: list[int] = field(default_factory=list)
    """Through with, not yet published."""
    later: list[int] = field(default_factory=list)
    """Published too early (nothing staged yet): asked again once the run has ended."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when ``EARLY_FILES`` files are pending."""
    early: int = 0
    """Files published while rsync still ran."""
    rsynced: float = 0.0
    """When the run ended (monotonic)."""

    def __post_init__(self) -> None:
        self.outcomes = [None] * len(self.requests)


class BatchRsync:
    """Pushes batches of files to one host at a time with one rsync run each."""

    def __init__(self, rsync: RsyncTransport, control_dir: Path) -> None:
        self.rsync = rsync
        """The single-file transport whose ssh setup, version check and metered runs a batch
        uses."""
        self.fallback = control_dir
        """Where a batch's symlinks go when the tmpfs cannot take them (the node's ssh
        control dir, under its data root)."""
        self.scratch = link_scratch(control_dir)
        """Where each batch's directory of symlinks is made (``link_scratch``)."""
        _remove_stale(self.scratch)
        self.totals = {"batches": 0, "files": 0, "failed_files": 0}
        """Batches pushed, their files, and the files that failed."""
        self.last: dict[str, object] | None = None
        """The last batch that sent something: its target, files, files sent, and the
        seconds of its probe, its rsync run and its publishing."""

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
        began = time.monotonic()
        outcomes: list[Outcome | None] = list(await self._probe(requests))
        send = [i for i, o in enumerate(outcomes) if o is None]
        if not send:
            return outcomes  # type: ignore[return-value]
        probed = time.monotonic()
        sending = _Sending([requests[i] for i in send], [transfers[i] for i in send])
        published = await self._send_and_publish(host, sending)
        done = time.monotonic()
        self.last = {"target": target, "files": len(requests), "sent": len(send),
                     "published_during_rsync": sending.early,
                     "probe_seconds": round(probed - began, 3),
                     "rsync_seconds": round(sending.rsynced - probed, 3),
                     "publish_after_rsync_seconds": round(done - sending.rsynced, 3)}
        log.info("batch to %s: %d files, %d sent (%d published while rsync ran); probe"
                 " %.2fs, rsync %.2fs, publishing after it %.2fs", target, len(requests),
                 len(send), sending.early, probed - began, sending.rsynced - probed,
                 done - sending.rsynced)
        for i, outcome in zip(send, published):
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    async def _probe(self, requests: list[PushRequest]) -> list[Outcome | None]:
        """What the receiver holds already (a result), else None: send it. One
        ``POST /v1/held`` per ``PUBLISH_FILES`` files."""
        outcomes: list[Outcome | None] = []
        for start in range(0, len(requests), PUBLISH_FILES):
            outcomes += await self._probe_some(requests[start:start + PUBLISH_FILES])
        return outcomes

    async def _probe_some(self, requests: list[PushRequest]) -> list[Outcome | None]:
        files = [{"data_type": r.artifact.data_type, "path": r.artifact.path,
                  "sha256": r.artifact.sha256, "origin": r.artifact.origin} for r in requests]
        target = requests[0].target
        async with self.rsync.session.post(f"{requests[0].target_url}/v1/held",
                                           json={"files": files}) as resp:
            if resp.status != 200:
                raise await _error(resp, target, f"a probe of {len(files)} files")
            results = (await resp.json())["results"]
        if len(results) != len(requests):
            raise TransferError(f"{target} answered {len(results)} probe results for"
                                f" {len(requests)} files")
        outcomes: list[Outcome | None] = []
        for request, answer in zip(requests, results):
            art, status = request.artifact, int(answer.get("status", 0))
            if status == 200 and answer.get("sha256") == art.sha256:
                outcomes.append(PushResult(target, art.sha256, art.size,
                                           float(answer["verified_at"]), True, 0,
                                           answer.get("root_id")))
            elif status in (200, 404):
                outcomes.append(None)
            else:
                outcomes.append(_outcome(request, answer))
        return outcomes

    async def _send_and_publish(self, host: HostConfig, sending: _Sending) -> list[Outcome]:
        """rsync the files in one run and publish them: while it runs, each time
        ``EARLY_FILES`` files are through, those are published (the receiver's hashing and
        fsyncs overlap the rest of the run); the rest once it has exited. One outcome per
        file, in order."""
        run = asyncio.create_task(self._send(host, sending))
        try:
            while not run.done():
                ready = asyncio.create_task(sending.wake.wait())
                await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if len(sending.pending) >= EARLY_FILES:
                    await self._publish_pending(sending, final=False)
            failure = run.exception()
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        if failure is not None and not isinstance(failure, TransferError):
            raise failure
        sending.pending += sending.later
        if failure is None:  # every file rsync did not list was not sent: the answer says
            sending.pending += [i for i in range(len(sending.requests))
                                if sending.outcomes[i] is None and i not in sending.sent]
        await self._publish_pending(sending, final=True)
        return [o if o is not None else failure for o in sending.outcomes]  # type: ignore[misc]

    async def _publish_pending(self, sending: _Sending, final: bool) -> None:
        """Publish the files rsync is through with (up to ``PUBLISH_FILES`` a request).
        Before the run has ended, one the receiver has no staged file of yet (rsync lists a
        file just before the receiver renames it into place) waits for the final round."""
        while sending.pending:
            take = sending.pending[:PUBLISH_FILES]
            del sending.pending[:len(take)]
            sending.wake.clear()
            answers = await self._publish_some([sending.requests[i] for i in take])
            for i, answer in zip(take, answers):
                if not final and answer.get("status") == 404:
                    sending.later.append(i)
                    continue
                outcome = _outcome(sending.requests[i], answer)
                if isinstance(outcome, PushResult):
                    outcome = replace(outcome, bytes_sent=sending.sent.get(i, 0))
                sending.outcomes[i] = outcome
                sending.early += not final
            if not final:
                return

    async def _send(self, host: HostConfig, sending: _Sending) -> None:
        """rsync the files in one run, each one listed in ``sending`` as rsync is through
        with it; raises a TransferError when the run failed as a whole."""
        requests, transfers = sending.requests, sending.transfers
        names = [staged_name(r.artifact.data_type, r.artifact.path, r.artifact.sha256,
                             r.artifact.origin) for r in requests]
        by_name = {name: i for i, name in enumerate(names)}
        where: Path | None = None

        def on_line(line: str) -> None:
            parts = line.split("|")
            if len(parts) == 4 and parts[1] in by_name and parts[3].isdigit():
                i = by_name[parts[1]]
                size = requests[i].artifact.size
                sending.sent[i] = int(parts[3])
                transfers[i].done = min(int(parts[3]), size)
                transfers[i].offset = size - transfers[i].done
                sending.pending.append(i)
                if len(sending.pending) >= EARLY_FILES:
                    sending.wake.set()

        try:
            where = await self._make_links(names, [r.source_file.absolute() for r in requests])
            remote = f"{self.rsync.ssh.destination(host)}:{host.data_root}/{STATE_DIR}/incoming/"
            size = sum(r.artifact.size for r in requests)
            async with self.rsync.bandwidth.allocate(
                    host.name, f"batch of {len(requests)} files ({size} bytes)") as alloc:
                code, out = await self.rsync.run_rsync(host, alloc, [
                    "--copy-links", "--chmod=F644", "-ii", "--out-format=%i|%n|%l|%b",
                    f"--files-from={where / LIST}", f"{where}/", remote], on_line)
        finally:
            sending.rsynced = time.monotonic()
            if where is not None:
                await asyncio.to_thread(shutil.rmtree, where, True)
        if code != 0 and code not in PARTIAL_EXITS:
            raise TransferError(f"rsync to {host.name} exited {code}: {_last_line(out)}",
                                retryable=not _host_key_refused(out))

    async def _make_links(self, names: list[str], sources: list[Path]) -> Path:
        """``_links`` in a thread. Cancelled meanwhile, the caller never learns the directory
        the thread goes on to make: it is removed as soon as the thread is done."""
        making = asyncio.ensure_future(asyncio.to_thread(self._links, names, sources))
        try:
            return await asyncio.shield(making)
        except asyncio.CancelledError:
            making.add_done_callback(_discard_links)
            raise

    def _links(self, names: list[str], sources: list[Path]) -> Path:
        """The batch's directory of symlinks: on the scratch tmpfs, else (full, gone) in the
        fallback directory; a TransferError when neither can take it."""
        for place in dict.fromkeys((self.scratch, self.fallback)):
            try:
                return _links(place, names, sources)
            except OSError as exc:
                error = f"cannot make this batch's links in {place}: {describe(exc)}"
                log.warning("%s", error)
        raise TransferError(error, target_fault=False)

    async def _publish_some(self, requests: list[PushRequest]) -> list[dict]:
        """``POST /v1/staged`` for ``requests``: the receiver's answer for each (a request
        that fails as a whole is one TransferError for all of them)."""
        target = requests[0].target
        try:
            return await self._post_staged(requests)
        except aiohttp.ClientError as exc:
            error = TransferError(f"{target} unreachable: {describe(exc)}")
        except asyncio.TimeoutError:
            error = TransferError(f"{target} timed out publishing {len(requests)} files")
        except TransferError as exc:
            error = exc
        return [{"error": error}] * len(requests)

    async def _post_staged(self, requests: list[PushRequest]) -> list[dict]:
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
        return results


def _outcome(request: PushRequest, answer: dict) -> Outcome:
    """One file's published answer as a result (its hash must be the version sent)."""
    if isinstance(answer.get("error"), TransferError):
        return answer["error"]
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


def link_scratch(fallback: Path) -> Path:
    """Where a node makes its batches' directories of symlinks: ``LINK_SCRATCH`` (a tmpfs)
    when it is there and writable, else ``fallback`` (the node's ssh control dir). A symlink
    is an inode: on the data disk each costs 0.1-0.7 ms here (ext4), 0.1-0.7 s for a batch of
    1,000 before rsync can start; on a tmpfs, a few microseconds. Only names go there, never
    bytes: rsync follows each to the file in the data root."""
    if LINK_SCRATCH.is_dir() and os.access(LINK_SCRATCH, os.W_OK | os.X_OK):
        return LINK_SCRATCH
    return fallback


def _links(scratch: Path, names: list[str], sources: list[Path]) -> Path:
    """A new private directory (0700) under ``scratch`` of symlinks ``names`` -> ``sources``
    and their ``--files-from`` list (``LIST``, not itself one of the names)."""
    where = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_pid_namespace()}-{os.getpid()}-",
                                  dir=scratch))
    try:
        for name, source in zip(names, sources):
            os.symlink(source, where / name)
        (where / LIST).write_text("".join(f"{name}\n" for name in names))
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise
    return where


def _discard_links(made: asyncio.Future[Path]) -> None:
    """A batch directory made for a batch that was cancelled meanwhile: removed (in a
    thread: a thousand links on the data disk take a while)."""
    if not made.cancelled() and made.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, made.result(), True)


def _remove_stale(scratch: Path) -> None:
    """Remove the batch directories a killed node process left under ``scratch``: only real
    directories (never a symlink), this user's, named for this pid namespace and a pid that
    is not running. Never fails: a name it cannot read is left alone."""
    mine = f"{SCRATCH_PREFIX}{_pid_namespace()}-"
    try:
        entries = list(os.scandir(scratch))
    except OSError:
        return
    for entry in entries:
        try:
            if not entry.name.startswith(mine) or not entry.is_dir(follow_symlinks=False) \
                    or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            pid = entry.name[len(mine):].split("-")[0]
            if not (pid.isascii() and pid.isdigit() and 0 < len(pid) <= 9):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except Exception:  # noqa: BLE001 - cleanup is best effort, never a failed start
            continue


def _pid_namespace() -> int:
    """This process's pid namespace (a pid names a process only inside one: containers
    sharing /dev/shm have their own)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0
