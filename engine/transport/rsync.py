"""RsyncTransport: pushes with the real rsync binary over real OpenSSH, published by the receiver.

One push to a host whose config says ``transport: rsync``:

1. ``HEAD /v1/objects/…`` asks the receiver what it holds (done when it has this version);
2. rsync copies the bytes over SSH (``SshSetup``: the node's own known_hosts,
   ``StrictHostKeyChecking=yes``, one master connection per host) to the receiver's
   ``DataRoot.staged_path``, with ``--partial-dir`` so an interrupted transfer is resumed
   from what arrived and never sits under a name anything reads; ``--timeout`` gives up a
   silent peer after the same idle bound as HTTP (``engine/stall.py``);
3. ``POST /v1/staged/…`` asks the receiver to verify and publish it. The receiver hashes
   the staged file itself and takes it through the same acceptance as an HTTP upload
   (size, SHA-256, SQLite's check, atomic publish); the result is its own hash. A file that
   changed while rsync read it does not hash to the version declared, so it is never
   published (422; the next attempt sends the new version).

Both ends must run rsync >= ``rsync_version.MIN_RSYNC``; an older one is refused with one
line, and trying again cannot help (a non-retryable failure). rsync's bytes draw from the
same per-host bucket as HTTP pushes, through the metering relay rsync runs as its ``-e``
program (``engine/transport/meter.py``), so ``/bandwidth/status`` shows the transfer and the
host's limit holds across transports.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from engine.bandwidth import Allocation, BandwidthCoordinator
from engine.children import die_with_parent
from engine.config import HostConfig
from engine.errors import describe
from engine.health import HealthCheckResult
from engine.hashing import sha256_file
from engine.headers import (H_KEY, H_MTIME, H_ORIGIN, H_REASON, H_ROOT, H_SHA, H_SIZE,
                            H_SOURCE, H_URGENCY, H_VERIFIED)
from engine.paths import STATE_DIR, staged_name
from engine.stall import upload_idle_seconds
from engine.transfers import Transfer
from engine.transport.base import (BatchRunner, PushRecord, PushRequest, PushResult,
                                   TransferError)
from engine.transport.http import _error
from engine.transport.meter import MeterServer, meter_script
from engine.transport.rsync_version import OldRsync, require
from engine.transport.ssh import SshError, SshPool
from engine.transport.ssh_setup import SshSetup

PARTIAL_DIR = ".rsync-partial"
"""rsync's ``--partial-dir``, relative to the receiver's incoming directory."""

LINE_LIMIT = 1 << 20
"""The longest line of rsync's or ssh's output read as it comes."""


class RsyncTransport:
    """Pushes with rsync over SSH; one instance per node."""

    name = "rsync"

    def __init__(self, session: aiohttp.ClientSession, node: str,
                 bandwidth: BandwidthCoordinator, host_of: Callable[[str], HostConfig],
                 ssh: SshSetup, meter: MeterServer | None = None,
                 rsync_binary: str = "rsync", pool: SshPool | None = None) -> None:
        self.session = session
        self.node = node
        self.bandwidth = bandwidth
        self.host_of = host_of
        """A host's config by name."""
        self.ssh = ssh
        self.rsync_binary = rsync_binary
        self.pool = pool
        """Remote operations (``sync_file`` has the far end hash what it holds)."""
        self.meter = meter
        """Where rsync's bytes draw from the host's bucket (None: ``--bwlimit`` instead)."""
        self._checked: dict[str, tuple[int, int, int]] = {}
        """rsync versions found, by where (``local`` or a host name)."""
        self.record = PushRecord("rsync")
        """Pushes and failures, and the health they add up to."""
        self.batch: BatchRunner | None = None
        """How batches go (``push_batch``): the ``BatchRsync`` the registry's factory sets."""

    def health_check(self) -> HealthCheckResult:
        return self.record.health_check(rsync_versions={
            k: ".".join(map(str, v)) for k, v in self._checked.items()},
            batches=getattr(self.batch, "totals", None),
            last_batch=getattr(self.batch, "last", None))

    async def push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        return await self.record.run(self._push(request, transfer))

    def batches_to(self, target: str) -> bool:
        return self.batch is not None

    async def push_batch(self, requests: list[PushRequest],
                         transfers: list[Transfer]) -> list[PushResult | TransferError]:
        """Many files to one target in one rsync run (``BatchRsync``)."""
        if self.batch is None:
            raise RuntimeError("this rsync transport was built without BatchRsync")
        outcomes = await self.batch.push(requests, transfers)
        for outcome in outcomes:
            self.record.note(outcome)
        return outcomes

    async def _push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        if request.live:
            raise TransferError("live snapshots go over http only", retryable=False,
                                target_fault=False)
        host = self.host_of(request.target)
        if host.ssh is None or host.ssh.host_key is None:
            raise TransferError(f"hosts.{host.name}.ssh (with host_key) is not set: cannot"
                                " rsync to it", retryable=False, target_fault=False)
        art = request.artifact
        url = f"{request.target_url}/v1/objects/{art.data_type}/{quote(art.path)}"
        try:
            await self.check_versions(host)
            async with self.session.head(url, headers={H_SHA: art.sha256,
                                                       H_ORIGIN: art.origin}) as resp:
                if resp.status == 200 and resp.headers.get(H_SHA) == art.sha256:
                    return PushResult(request.target, art.sha256, art.size,
                                      float(resp.headers.get(H_VERIFIED, time.time())), True, 0,
                                      resp.headers.get(H_ROOT))
                if resp.status not in (200, 404):
                    raise await _error(resp, request.target, art.key)
            async with self.bandwidth.allocate(request.target, art.key) as alloc:
                await self._rsync(request, host, transfer, alloc)
            return await self._publish(request, transfer.done)
        except OldRsync as exc:
            raise TransferError(str(exc), retryable=False, target_fault=False) from None
        except aiohttp.ClientError as exc:
            raise TransferError(f"{request.target} unreachable: {describe(exc)}") from exc
        except asyncio.TimeoutError as exc:
            raise TransferError(f"{request.target} timed out on {art.key}") from exc

    async def check_versions(self, host: HostConfig) -> None:
        """Refuse an rsync older than MIN_RSYNC here or on ``host`` (checked once each)."""
        if "local" not in self._checked:
            _code, out = await _run([self.rsync_binary, "--version"])
            self._checked["local"] = require(out, f"this node ({self.node})")
        if host.name not in self._checked:
            code, out = await _run([*self.ssh.options(host), self.ssh.destination(host),
                                    "rsync", "--version"])
            if code == 255:
                raise TransferError(f"ssh to {host.name} failed: {_last_line(out)}",
                                    retryable=not _host_key_refused(out))
            self._checked[host.name] = require(out, host.name)

    async def _rsync(self, request: PushRequest, host: HostConfig, transfer: Transfer,
                     alloc: Allocation) -> None:
        art = request.artifact
        remote = (f"{host.data_root}/{STATE_DIR}/incoming/"
                  f"{staged_name(art.data_type, art.path, art.sha256, art.origin)}")
        code, out = await self.run_rsync(host, alloc, ["--chmod=F644", str(request.source_file),
                                                       f"{self.ssh.destination(host)}:{remote}"])
        if code != 0:
            raise TransferError(f"rsync to {request.target} exited {code}: {_last_line(out)}",
                                retryable=not _host_key_refused(out))
        matched, literal = _stat(out, "Matched data"), _stat(out, "Literal data")
        # a resume: the partial the receiver kept matched, only the rest was sent
        transfer.offset = matched if matched is not None else 0
        transfer.done = literal if literal is not None else art.size - transfer.offset

    async def run_rsync(self, host: HostConfig, alloc: Allocation, args: list[str],
                        on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
        """One rsync run to ``host`` (``args``: options, sources, destination), resumable and
        bounded by the stall bound, its bytes drawn from ``alloc`` through the meter (else
        limited by ``--bwlimit``); its exit code and output (each line also to ``on_line``
        as rsync prints it)."""
        argv = [self.rsync_binary, "--partial", f"--partial-dir={PARTIAL_DIR}", "--times",
                "--stats", f"--timeout={max(1, round(upload_idle_seconds()))}"]
        if self.meter is None:
            kib = max(1, int(self.bandwidth.limit_mbps(host.name) * 1_000_000 / 1024))
            return await _run([*argv, f"--bwlimit={kib}", "-e", self.ssh.rsh(host), *args],
                              on_line)
        with self.meter.admit(alloc) as token:
            # The relay by its path, isolated: it needs only the standard library, and as
            # ``-m engine.transport.meter`` it would import the engine's transports (aiohttp,
            # asyncssh): 1.2 s of start-up and CPU before every rsync run.
            relay = [sys.executable, "-I", "-S", meter_script(), str(self.meter.path),
                     token, str(self.meter.chunk), "--", *self.ssh.options(host)]
            return await _run([*argv, "-e", shlex.join(relay), *args], on_line)

    async def _publish(self, request: PushRequest, sent: int) -> PushResult:
        art = request.artifact
        headers = {H_SIZE: str(art.size), H_SHA: art.sha256, H_SOURCE: self.node,
                   H_ORIGIN: art.origin, H_MTIME: f"{art.mtime:.6f}",
                   H_REASON: request.reason, H_URGENCY: request.urgency}
        if art.config_key:
            headers[H_KEY] = art.config_key
        url = f"{request.target_url}/v1/staged/{art.data_type}/{quote(art.path)}"
        async with self.session.post(url, headers=headers) as resp:
            if resp.status not in (200, 201):
                raise await _error(resp, request.target, art.key)
            answer = await resp.json()
        if answer.get("sha256") != art.sha256 or answer.get("size") != art.size:
            raise TransferError(f"{request.target} verified {answer.get('sha256')} but we"
                                f" sent {art.sha256}")
        return PushResult(request.target, answer["sha256"], answer["size"],
                          float(answer["verified_at"]), bool(answer.get("already_present")),
                          sent, answer.get("root_id"))


    async def sync_file(self, source: str | Path, dest: str, host: str) -> SyncFileResult:
        """The seed's ``sync_file``: rsync one file to ``dest`` (``user@host:/dir/`` or
        ``user@host:/dir/name``) on ``host``, within its bandwidth budget, resumable
        (``--partial-dir``), then verified by the SHA-256 the far end computes of what it
        now holds. ``dest``'s ``user@host`` must be the host's configured ssh endpoint (the
        only one whose key this node knows)."""
        started = time.monotonic()
        config = self.host_of(host)
        src = Path(source)
        try:
            if config.ssh is None or config.ssh.host_key is None:
                raise TransferError(f"hosts.{host}.ssh (with host_key) is not set",
                                    retryable=False)
            where, sep, path = dest.partition(":")
            if not sep or where != self.ssh.destination(config) or not path.startswith("/"):
                raise TransferError(f"dest {dest!r} must be {self.ssh.destination(config)}:"
                                    "/absolute/path (hosts." + host + ".ssh)", retryable=False)
            remote = f"{path}{src.name}" if path.endswith("/") else path
            await self.check_versions(config)
            sha = await asyncio.to_thread(sha256_file, src)
            async with self.bandwidth.allocate(host, f"sync_file {src.name}") as alloc:
                code, out = await self.run_rsync(config, alloc, [str(src), f"{where}:{remote}"])
            if code != 0:
                raise TransferError(f"rsync to {host} exited {code}: {_last_line(out)}",
                                    retryable=not _host_key_refused(out))
            if self.pool is None:
                raise TransferError("no ssh pool to verify the copy with", retryable=False)
            try:
                held = await self.pool.sha256(host, remote)
            except SshError as exc:
                raise TransferError(f"cannot verify {remote} on {host}: {exc}") from None
            if held != sha:
                raise TransferError(f"{host} holds {remote} with sha256 {held} after the"
                                    f" transfer, not {sha}")
            literal = _stat(out, "Literal data")
            return SyncFileResult(True, host, str(src), f"{where}:{remote}",
                                  literal if literal is not None else src.stat().st_size,
                                  sha, True, None, round(time.monotonic() - started, 3))
        except (TransferError, OldRsync, OSError) as exc:
            return SyncFileResult(False, host, str(src), dest, 0, None, False, str(exc),
                                  round(time.monotonic() - started, 3))


@dataclass(frozen=True)
class SyncFileResult:
    """What ``sync_file`` did."""

    success: bool
    host: str
    source: str
    dest: str
    bytes_transferred: int
    """Bytes rsync sent (less than the size when a partial was resumed)."""
    sha256: str | None
    verified: bool
    """The far end hashed its file and it is the source's SHA-256."""
    error: str | None
    seconds: float


async def _run(argv: list[str],
               on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run ``argv``; its exit code and its output (stdout and stderr), each line also given
    to ``on_line`` as it comes. A cancelled push kills it."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=die_with_parent(), limit=LINE_LIMIT)
    except OSError as exc:
        raise TransferError(f"cannot run {argv[0]}: {describe(exc)}", retryable=False,
                            target_fault=False) from None
    try:
        if on_line is None:
            out, _ = await proc.communicate()
            return proc.returncode or 0, out.decode(errors="replace")
        assert proc.stdout is not None
        lines = []
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            on_line(line.rstrip("\n"))
        return await proc.wait() or 0, "".join(lines)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise


def _stat(out: str, name: str) -> int | None:
    """A byte count from ``rsync --stats`` (``Literal data: 6,291,456 bytes``)."""
    match = re.search(rf"^{name}: ([\d,.]+) bytes", out, re.MULTILINE)
    return int(re.sub(r"[,.]", "", match.group(1))) if match else None


def _last_line(out: str) -> str:
    """What to say of a failed rsync or ssh: a refused host key plainly, else its last line."""
    if _host_key_refused(out):
        return ("Host key verification failed: the host's key is not the one its config names"
                " (ssh.host_key)")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return (lines or ["no output"])[-1][:300]


def _host_key_refused(out: str) -> bool:
    """ssh refused the host's key: trying again cannot help until the config changes."""
    return "Host key verification failed" in out or "IDENTIFICATION HAS CHANGED" in out
