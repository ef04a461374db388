"""The demo's live terminal view (rich): one row per node, the coordinator's latest events, totals.

Everything shown comes from the nodes' HTTP API (``GET /status`` on every node, polled
concurrently with short timeouts; ``GET /v1/events?since=N&follow=0`` on the coordinator) and
from the generators' ledgers. Never imports textual.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.aio import wait_event
from engine.config import ClusterConfig
from engine.demo.summary import human_bytes, ledger_entries

REFRESH_SECONDS = 0.5
EVENTS_SHOWN = 10


async def fetch_status(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """A node's ``/status``, or None when it does not answer in time."""
    try:
        async with session.get(f"{url}/status", timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The JSON ``data:`` payloads of a server-sent-events body."""
    out = []
    for frame in text.split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in frame.splitlines()
                         if line.startswith("data:"))
        if data:
            try:
                out.append(json.loads(data))
            except json.JSONDecodeError:
                continue
    return out


class EventTail:
    """The coordinator's newest events, fetched incrementally with a ``since`` cursor."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.since: int | None = None
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_SHOWN)
        self.seen = 0

    async def poll(self, session: aiohttp.ClientSession, events_seq: int | None) -> None:
        if self.since is None:
            if events_seq is None:
                return
            self.since = max(0, events_seq - EVENTS_SHOWN)  # skip history from earlier runs
        try:
            async with session.get(f"{self.url}/v1/events",
                                   params={"since": str(self.since), "follow": "0"},
                                   timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                if resp.status != 200:
                    return
                text = await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return
        for event in parse_sse(text):
            seq = int(event.get("seq", 0))
            if seq > self.since:
                self.since = seq
                self.recent.append(event)
                self.seen += 1


def describe_event(event: dict[str, Any]) -> str:
    """One short line for an event's payload."""
    p = event.get("payload") or {}
    kind = event.get("type", "?")
    if kind in ("DATA_SYNC_COMPLETED", "DATA_SYNC_STARTED"):
        where = f"{p.get('source')}→{p.get('target') or ','.join(p.get('targets') or [])}"
        first = (p.get("artifacts") or [""])[0]
        return f"{where} {p.get('files')} file(s) {human_bytes(p.get('bytes') or 0)} {first}"
    if kind == "DATA_SYNC_FAILED":
        return f"{p.get('source')}→{p.get('target')} {p.get('artifact')}: {p.get('error')}"
    if "node" in p:
        rest = ", ".join(f"{k}={v}" for k, v in p.items() if k != "node")
        return f"{p['node']} {rest}"
    return ", ".join(f"{k}={v}" for k, v in p.items())


def short_bytes(n: float) -> str:
    """Compact sizes for table cells: ``149K``, ``1.6M``, ``64M``, ``2.0G``."""
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" or n >= 10 or n == int(n) else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"  # pragma: no cover


def _transfers(status: dict[str, Any]) -> str:
    live = (status.get("transfers") or {}).get("in_flight") or []
    if not live:
        return "-"
    t = live[0]
    data_type, _, rel = str(t.get("artifact", "")).partition("/")
    name = rel.rsplit("/", 1)[-1]
    short = name if len(name) <= 12 else name[:10] + ".."
    more = f" +{len(live) - 1}" if len(live) > 1 else ""
    return (f"{len(live)}: {t.get('source')}→{t.get('target')} {data_type}/{short} "
            f"{100 * float(t.get('progress') or 0):.0f}%{more}")


def render(config: ClusterConfig, statuses: dict[str, dict[str, Any] | None], tail: EventTail,
           generated: int, started: float, footer: str) -> Group:
    """The whole screen for one refresh."""
    table = Table(title=f"ringsync demo — {config.cluster_name} — "
                        f"{time.monotonic() - started:.0f} s — Ctrl-C to stop",
                  title_justify="left", expand=False, pad_edge=False)
    for column in ("node", "role", "provider", "state", "disk", "artifacts", "pending",
                   "in flight", "pushed"):
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         max_width=34 if column == "in flight" else None)
    pushed_files = pushed_bytes = failed = 0
    for name, host in config.hosts.items():
        s = statuses.get(name)
        if s is None:
            table.add_row(name, host.role, host.provider, Text("down", style="bold red"),
                          "", "", "", "", "")
            continue
        disk = s.get("disk") or {}
        sync = s.get("sync") or {}
        pushed_files += int(sync.get("pushed_files") or 0)
        pushed_bytes += int(sync.get("pushed_bytes") or 0)
        failed += int(sync.get("failed") or 0)
        pct = float(disk.get("percent") or 0)
        style = "red" if pct >= 70 else "yellow" if pct >= 50 else ""
        arts = s.get("artifacts") or {}
        state = Text("paused" if s.get("paused") else "up",
                     style="yellow" if s.get("paused") else "green")
        table.add_row(
            name, host.role, host.provider, state,
            Text(f"{short_bytes(disk.get('used_bytes') or 0)}/"
                 f"{short_bytes(disk.get('total_bytes') or 0)} {pct:.0f}%", style=style),
            " ".join(f"{k} {v}" for k, v in sorted(arts.items())) or "-",
            str(sync.get("pending", 0)), _transfers(s),
            f"{sync.get('pushed_files', 0)} · {short_bytes(sync.get('pushed_bytes') or 0)}")
    events = Table.grid(padding=(0, 1))
    for event in tail.recent:
        style = {"error": "red", "warning": "yellow"}.get(str(event.get("severity")), "")
        events.add_row(time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0))),
                       Text(str(event.get("type", "")), style=style),
                       Text(describe_event(event), overflow="ellipsis", no_wrap=True))
    coord = statuses.get(config.coordinator.name) or {}
    on_coord = sum((coord.get("artifacts") or {}).values())
    totals = Text(f"generated {generated} · on coordinator {on_coord} · pushed {pushed_files} "
                  f"files / {human_bytes(pushed_bytes)} · failed pushes {failed}", style="bold")
    return Group(table, Text(f"latest events on {config.coordinator.name}:", style="dim"),
                 events, totals, Text(footer, style="dim"))


async def run_live(config: ClusterConfig, ledgers: Path, stop: asyncio.Event,
                   duration: float | None, console: Console, footer: str = "") -> None:
    """Show the view until ``stop`` is set or ``duration`` seconds pass."""
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    tail = EventTail(config.coordinator.url)
    headers = {"Authorization": f"Bearer {config.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                names = list(config.hosts)
                results = await asyncio.gather(
                    *(fetch_status(session, config.hosts[n].url) for n in names))
                statuses = dict(zip(names, results))
                coord = statuses.get(config.coordinator.name)
                await tail.poll(session, coord.get("events_seq") if coord else None)
                generated = len(await asyncio.to_thread(ledger_entries, ledgers))
                live.update(render(config, statuses, tail, generated, started, footer))
                wait = REFRESH_SECONDS if deadline is None else min(
                    REFRESH_SECONDS, max(0.0, deadline - time.monotonic()))
                await wait_event(stop, wait)
