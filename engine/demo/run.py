"""``ringsync demo``: the cluster of config/local.yaml as real engine processes, with a synthetic
self-play generator on every GPU node, the dashboard (or ``--headless``), and a summary at the end.

With a view (the dashboard, passed in by ``ringsync_tui`` so the engine never imports textual)
the coordinator's engine runs inside this process, embedded in the view's asyncio loop, as it
does on a real coordinator; every other node is its own process. Headless, every node is.

Order of shutdown (Ctrl-C, SIGTERM, or ``--duration`` elapsed): generators first (each closes its
open database), then the engines get up to ~10 s to drain (until every ledger artifact is verified
on the coordinator), then the engines are stopped. The summary is computed from files on disk
after every process has exited. Exit codes: 0 nothing missing, 1 data missing or a node failed to
start, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp

from engine.aio import wait_event
from engine.config import ClusterConfig, ConfigError, load_config
from engine.demo.launcher import Launcher, LaunchError
from engine.demo.ledger import LedgerEntry
from engine.demo.summary import CoordinatorCheck, compute_summary, format_summary, ledger_entries
from engine.main import log_to_file
from engine.resources import config_dir

if TYPE_CHECKING:
    from engine.node import Node

DemoView = Callable[["Node", asyncio.Event, "float | None"], Awaitable[None]]
"""Shows the cluster through the embedded coordinator until the operator quits or the event is
set (or the duration passes)."""

DRAIN_SECONDS = 10.0


def _say(message: str) -> None:
    print(f"ringsync demo: {message}", file=sys.stderr, flush=True)


def wipe_workdir(workdir: Path) -> str | None:
    """Delete a demo working directory; returns why it refused, or None when done."""
    if not workdir.exists():
        return None
    if not workdir.is_dir() or workdir.is_symlink():
        return f"--fresh: {workdir} is not a directory; not deleting it"
    if any(workdir.iterdir()) and not (workdir / "cluster.yaml").is_file():
        return (f"--fresh: {workdir} does not look like a demo workdir (no cluster.yaml);"
                " not deleting it")
    shutil.rmtree(workdir)
    return None


class Demo:
    """One demo run: start, watch, drain, stop."""

    def __init__(self, args: argparse.Namespace, config: ClusterConfig, workdir: Path,
                 view: DemoView | None = None) -> None:
        self.args = args
        self.config = config
        self.launcher = Launcher(config, workdir)
        self.view = view
        """The dashboard; None runs headless."""
        self.embedded: Node | None = None
        """The coordinator's engine, when it runs in this process (with a view)."""
        self.stop = asyncio.Event()
        self.signals = 0

    def _on_signal(self) -> None:
        self.signals += 1
        if self.signals > 1:
            _say("second interrupt: skipping the drain")
        self.stop.set()

    async def run(self) -> int:
        """Start everything, run until stopped, stop everything; returns 0, or 1 on start failure."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            self.launcher.prepare()
            try:
                await self.launcher.start_nodes(self.stop, embedded=self._embedded_name())
                if self.view is not None:
                    await self._start_embedded()
            except LaunchError as exc:
                print(f"ringsync demo: {exc}", file=sys.stderr, flush=True)
                return 1
            self.launcher.start_generators()
            await self._watch()
            await self._shutdown()
            return 0
        finally:
            await self.launcher.stop_generators()
            await self.launcher.stop_nodes()
            await self._stop_embedded()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _embedded_name(self) -> str | None:
        return self.config.coordinator.name if self.view is not None else None

    async def _start_embedded(self) -> None:
        from engine.node import Node

        name = self.config.coordinator.name
        log_to_file(self.launcher.logs / f"{name}.log")
        node = Node(self.config, name)
        try:
            await node.start()
        except OSError as exc:
            raise LaunchError(f"node {name} cannot start in the dashboard: {exc}") from exc
        self.embedded = node

    async def _stop_embedded(self) -> None:
        if self.embedded is not None:
            node, self.embedded = self.embedded, None
            await node.stop()

    async def _watch(self) -> None:
        duration = self.args.duration
        gpus = len(self.launcher.generators)
        if self.view is None:
            _say(f"{len(self.config.hosts)} nodes up, {gpus} generators running"
                 + (f" for {duration:g} s" if duration else " until Ctrl-C")
                 + f" (logs: {self.launcher.logs})")
            deadline = None if duration is None else time.monotonic() + duration
            reported: set[str] = set()
            while not self.stop.is_set():
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0:
                    break
                await wait_event(self.stop, left)
                for name in set(self.launcher.dead_nodes()) - reported:
                    reported.add(name)
                    _say(f"node {name} exited unexpectedly (see {self.launcher.logs}/{name}.log)")
            return
        assert self.embedded is not None
        await self.view(self.embedded, self.stop, duration)

    async def _shutdown(self) -> None:
        _say("stopping generators")
        await self.launcher.stop_generators()
        if self.signals < 2:
            await self._drain()
        _say("stopping nodes")
        await self.launcher.stop_nodes()
        await self._stop_embedded()

    async def _drain(self) -> None:
        """Let the engines push what is left, until the coordinator holds every ledger artifact."""
        check = CoordinatorCheck(self.config.coordinator.data_root)
        deadline = time.monotonic() + DRAIN_SECONDS
        poked = False
        poke_at = time.monotonic() + self.config.transfer.finished_after_seconds + 0.2
        left: list[LedgerEntry] = []
        while time.monotonic() < deadline and self.signals < 2:
            entries = await asyncio.to_thread(ledger_entries, self.launcher.ledgers)
            left = await asyncio.to_thread(check.unverified, entries)
            if not left:
                _say(f"all {len(entries)} generated artifacts are verified on the coordinator")
                return
            if not poked and time.monotonic() >= poke_at:
                poked = True
                await self._priority_sync()
            await asyncio.sleep(0.3)
        if left:
            _say(f"{len(left)} artifact(s) not yet on the coordinator after the drain")

    async def _priority_sync(self) -> None:
        """Ask every GPU node to push now instead of at its next interval."""
        headers = {"Authorization": f"Bearer {self.config.token}"}
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            async def poke(url: str) -> None:
                # Best effort: a node that does not answer just drains at its own interval.
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.post(f"{url}/v1/control/priority-sync",
                                            json={"reason": "demo-drain"}) as resp:
                        await resp.read()
            await asyncio.gather(*(poke(h.url) for h in self.config.hosts_by_role("gpu")))


def run_demo(args: argparse.Namespace, view: DemoView | None = None) -> int:
    """Entry point of ``ringsync demo``; returns the exit code. Headless when ``view`` is None."""
    config_path = Path(args.demo_config) if args.demo_config else config_dir() / "local.yaml"
    workdir = Path(args.workdir).expanduser().absolute()
    if args.duration is not None and not args.duration > 0:
        print("ringsync: error: --duration must be > 0 seconds", file=sys.stderr)
        return 2
    try:
        config = load_config(config_path, base_dir=workdir)
    except ConfigError as exc:
        print(f"ringsync: config error: {exc}", file=sys.stderr)
        return 2
    if args.fresh:
        problem = wipe_workdir(workdir)
        if problem:
            print(f"ringsync: error: {problem}", file=sys.stderr)
            return 2
    demo = Demo(args, config, workdir, view)
    started = time.monotonic()
    try:
        code = asyncio.run(demo.run())
    except KeyboardInterrupt:  # a Ctrl-C that arrived before the handlers were installed
        code = 130
    finally:
        demo.launcher.kill_all()
    if code != 0:
        return code
    summary = compute_summary(config, demo.launcher.ledgers, time.monotonic() - started)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(format_summary(summary), flush=True)
    return 0 if summary["missing"] == 0 else 1
