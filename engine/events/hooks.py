"""HookRunner: runs the configured ``hooks:`` commands when their events are emitted.

The bus listener only enqueues (it runs inside ``EventBus.emit``); a fixed number of worker
tasks (a ``TaskSet`` of the runtime) take jobs from a bounded queue and run each command with
``asyncio.create_subprocess_exec`` (no shell), so a slow or hanging hook never blocks
syncing or the event loop. A full queue drops the job. A dropped job, a command that
cannot start, exits non-zero or outlives ``timeout_seconds`` (its process group is then
killed and reaped) is a HOOK_FAILED event.

Artifact events (a payload with ``artifacts``, i.e. DATA_SYNC_COMPLETED) run the command
once per listed artifact of a wanted data type whose file this node stores; other events
run it once. Recursion is bounded: a HOOK_FAILED event about a hook that itself listens to
HOOK_FAILED runs no hooks (it is still logged and streamed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine.config.schema import Hook
from engine.events.bus import EventBus
from engine.events.types import Event, EventType, HookFailed
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest
from engine.paths import DataRoot, UnsafePath
from engine.runtime import TaskSet

log = logging.getLogger(__name__)

WORKERS = 2
"""Hook commands running at once on one node."""
QUEUE_SIZE = 256
"""Jobs waiting for a worker; beyond this new jobs are dropped (HOOK_FAILED)."""
FAILING_RUNS = 3
"""A hook whose last this-many runs all failed makes the runner unhealthy."""
ERROR_CHARS = 300
STDERR_TAIL_BYTES = 4096
KILL_WAIT_SECONDS = 5.0
"""How long a killed command is waited for before giving up on reaping it."""
LIVE_REASON = "live_snapshot"
"""The reason live snapshots are synced with (engine.daemons.live_snapshots.LIVE_REASON):
a live snapshot is not a finished artifact, so it runs no hooks."""
PLACEHOLDER = re.compile(r"\{(path|data_type|config_key|node|event|artifact)\}")


@dataclass(frozen=True, eq=False)
class HookJob:
    """One command to run: ``hook`` (index ``index`` in the config) for ``event``."""

    index: int
    hook: Hook
    event: Event
    artifact: str | None
    """``<data_type>/<path>`` for an artifact event, else None."""


def hook_name(hook: Hook) -> str:
    """How events and health name a hook: the basename of its command's first word."""
    return os.path.basename(hook.command[0]) or hook.command[0]


def expand(argv: list[str], values: dict[str, str]) -> list[str]:
    """Fill the known ``{placeholders}`` in one pass; other braces are left as they are."""
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in argv]


def one_line(text: str) -> str:
    """The end of ``text`` as one line of at most ERROR_CHARS characters."""
    flat = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat[-ERROR_CHARS:]


class HookRunner:
    """Runs one node's hooks off its EventBus; ``start()`` the workers, ``stop()`` them."""

    def __init__(self, hooks: list[Hook], node: str, events: EventBus, data: DataRoot,
                 manifest: ClusterManifest, workers: int = WORKERS,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.hooks = list(hooks)
        self.node = node
        self.events = events
        self.data = data
        self.manifest = manifest
        self.workers = workers
        self.queue: asyncio.Queue[HookJob] = asyncio.Queue(queue_size)
        self.counts = {"runs": 0, "succeeded": 0, "failed": 0, "dropped": 0, "skipped": 0}
        """Runs started, their outcomes, jobs dropped (queue full) and artifact jobs skipped
        (the file is not stored here)."""
        self.last_failure: dict[str, object] | None = None
        self._outcomes: list[collections.deque[bool]] = [
            collections.deque(maxlen=FAILING_RUNS) for _ in self.hooks]
        self._errors = ["" for _ in self.hooks]
        self._workers = TaskSet(f"hooks:{node}")
        """The worker tasks (none before ``start`` and after ``stop``)."""
        self._running: set[HookJob] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._quiet = False
        self._stopped = False
        for wanted in sorted({h.event for h in self.hooks}):
            events.listen(self._on_event, EventType(wanted))

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker tasks (jobs enqueued before this wait for them)."""
        if self.hooks and not len(self._workers):
            for i in range(self.workers):
                self._workers.spawn(self._work(), name=f"hooks:{self.node}:{i}")

    async def stop(self) -> None:
        """Stop taking jobs, cancel the workers and kill (and reap) every running command."""
        self._stopped = True
        await self._workers.close()
        for proc in list(self._procs):  # a worker cancelled before its own cleanup ran
            if proc.returncode is None:
                await _kill(proc)

    # -- enqueueing (inside emit: never blocks) ---------------------------------------------
    def _on_event(self, event: Event) -> None:
        if self._stopped or self._quiet:
            return
        artifacts = getattr(event.payload, "artifacts", None)
        for index, hook in enumerate(self.hooks):
            if hook.event != event.type.value:
                continue
            if artifacts is None:
                self._enqueue(HookJob(index, hook, event, None))
                continue
            if getattr(event.payload, "reason", None) == LIVE_REASON:
                continue
            for key in artifacts:
                if not hook.data_types or key.split("/", 1)[0] in hook.data_types:
                    self._enqueue(HookJob(index, hook, event, key))

    def _enqueue(self, job: HookJob) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            error = f"hook queue full ({self.queue.maxsize} waiting): job dropped"
            try:  # report after this emit has finished delivering (keeps feeds in order)
                asyncio.get_running_loop().call_soon(self._report, job, None, error, 0.0)
            except RuntimeError:
                self._report(job, None, error, 0.0)

    # -- running ----------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self._running.add(job)
            try:
                await self._run(job)
            except Exception:  # a bug here must not kill the worker
                log.exception("hook %s failed unexpectedly", hook_name(job.hook))
            finally:
                self._running.discard(job)

    def _values(self, job: HookJob) -> dict[str, str] | None:
        """Placeholder values, or None when the job's artifact is not stored here."""
        values = {"node": self.node, "event": job.event.type.value, "artifact": "",
                  "path": "", "data_type": "", "config_key": ""}
        if job.artifact is None:
            return values
        data_type, _, rel = job.artifact.partition("/")
        path = self._stored(data_type, rel)
        if path is None:
            return None
        art = self.manifest.get_artifact(data_type, rel)
        return {**values, "artifact": job.artifact, "path": str(path), "data_type": data_type,
                "config_key": (art.config_key if art else None) or ""}

    def _stored(self, data_type: str, rel: str) -> Path | None:
        """This node's file of ``data_type/rel``: its own source, else its newest verified copy
        of it (events name artifacts by path; the origin is in the copy's place)."""
        try:
            own = self.data.source_path(data_type, rel)
            if own.is_file():
                return own
            for rep in self.manifest.copies_named(self.node, data_type, rel):
                copy = self.data.copy_path(rep.origin, data_type, rel, rep.sha256)
                if copy.is_file():
                    return copy
        except UnsafePath:
            return None
        return None

    async def _run(self, job: HookJob) -> None:
        values = self._values(job)
        if values is None:
            self.counts["skipped"] += 1
            return
        self.counts["runs"] += 1
        env = {**os.environ, **{f"RINGSYNC_{k.upper()}": values[k] for k in
                                ("event", "node", "artifact", "path", "config_key", "data_type")}}
        # Files, not pipes: a child the command leaves behind cannot hold up its reaping.
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
            stdin.write(json.dumps(job.event.to_dict()).encode())
            stdin.seek(0)
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *expand(job.hook.command, values), stdin=stdin,
                    stdout=asyncio.subprocess.DEVNULL, stderr=stderr, env=env,
                    start_new_session=True)
            except OSError as exc:  # FileNotFoundError, PermissionError, ...
                self._finish(job, False, None, f"cannot start: {exc}", started)
                return
            self._procs.add(proc)
            try:
                async with asyncio.timeout(job.hook.timeout_seconds):
                    await proc.wait()
            except TimeoutError:
                await _kill(proc)
                error = f"timed out after {job.hook.timeout_seconds:g}s (killed)"
                if tail := _tail(stderr):
                    error = f"{error}: {tail}"
                self._finish(job, False, None, error, started)
                return
            finally:
                if proc.returncode is None:
                    await _kill(proc)  # cancelled: the runner is stopping
                self._procs.discard(proc)
            code = proc.returncode
            error = "" if code == 0 else _tail(stderr) or f"exit status {code}"
            self._finish(job, code == 0, code, error, started)

    def _finish(self, job: HookJob, ok: bool, code: int | None, error: str,
                started: float) -> None:
        self._outcomes[job.index].append(ok)
        if ok:
            self.counts["succeeded"] += 1
            return
        self.counts["failed"] += 1
        self._errors[job.index] = error
        self._report(job, code, error, time.monotonic() - started)

    def _report(self, job: HookJob, code: int | None, error: str, seconds: float) -> None:
        """Emit HOOK_FAILED; one about a hook on HOOK_FAILED runs no hooks (no loop)."""
        payload = HookFailed(node=self.node, hook=hook_name(job.hook),
                             event=job.event.type.value, artifact=job.artifact,
                             exit_code=code, error=error, seconds=round(seconds, 3))
        self.last_failure = payload.to_dict()
        log.warning("hook %s on %s failed: %s", payload.hook, payload.event, error)
        self._quiet = job.hook.event == EventType.HOOK_FAILED.value
        try:
            self.events.emit(payload)
        finally:
            self._quiet = False

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """Counters for ``/status``: runs and outcomes, what is running and waiting."""
        return {"hooks": len(self.hooks), "workers": self.workers, **self.counts,
                "running": len(self._running), "queued": self.queue.qsize(),
                "last_failure": self.last_failure}

    def health_check(self) -> HealthCheckResult:
        """Unhealthy while some hook failed each of its last FAILING_RUNS runs."""
        failing = [i for i, outcomes in enumerate(self._outcomes)
                   if len(outcomes) == FAILING_RUNS and not any(outcomes)]
        if failing:
            message = "; ".join(f"hooks[{i}] {hook_name(self.hooks[i])} failed its last "
                                f"{FAILING_RUNS} runs: {self._errors[i]}" for i in failing)
        else:
            message = f"{len(self.hooks)} hooks" if self.hooks else "no hooks configured"
        return HealthCheckResult(not failing, message, self.status())


def _tail(stderr: IO[bytes]) -> str:
    """The end of what the command wrote to ``stderr``, as one line."""
    size = stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, size - STDERR_TAIL_BYTES))
    return one_line(stderr.read().decode(errors="replace"))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's whole process group (its own session) and reap the command."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        async with asyncio.timeout(KILL_WAIT_SECONDS):
            await proc.wait()
    except TimeoutError:  # stuck in the kernel (e.g. a dead NFS mount): do not hang stop()
        log.error("hook process %d did not exit after SIGKILL", proc.pid)
