"""What a demo run achieved, computed from files on disk: the generators' ledgers (ground truth),
every node's data root, and every node's events log.

    generated                 ledger entries, all GPU nodes
    verified_on_coordinator   entries with an intact copy in the coordinator's data root
    missing                   entries with no intact copy in ANY data root (must be 0)
    bytes_moved               bytes the senders report pushed (DATA_SYNC_COMPLETED, not "receive")
    failed_transfers          DATA_SYNC_FAILED events, all nodes
    deleted                   sources deleted under disk pressure (ARTIFACT_DELETED), all nodes
    min_verified_copies       over the ledger entries deleted at their source: the fewest data
                              roots still holding an intact copy (None when nothing was deleted)
    pressure                  per GPU node, the highest disk-pressure level it reached
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import ClusterConfig
from engine.daemons.push import LEVELS
from engine.demo.ledger import LedgerEntry, find_intact_copy, intact_copies, read_ledger

EVENTS_LOG = Path(".ringsync") / "events.jsonl"


def ledger_entries(ledgers: Path) -> list[LedgerEntry]:
    """Every entry of every ``*.jsonl`` ledger in ``ledgers``."""
    out: list[LedgerEntry] = []
    for path in sorted(ledgers.glob("*.jsonl")):
        out.extend(read_ledger(path))
    return out


class CoordinatorCheck:
    """Which ledger entries the coordinator holds intact; a verified entry is not checked again."""

    def __init__(self, coordinator_root: Path) -> None:
        self.root = coordinator_root
        self._verified: set[tuple[str, str, str]] = set()

    def unverified(self, entries: list[LedgerEntry]) -> list[LedgerEntry]:
        """Entries not (yet) intact on the coordinator. Blocking: run it in a worker thread."""
        left = []
        for entry in entries:
            key = (entry.node, entry.data_type, entry.path)
            if key in self._verified:
                continue
            if intact_copies(entry, [self.root]):
                self._verified.add(key)
            else:
                left.append(entry)
        return left


def read_events(data_root: Path) -> Iterator[dict[str, Any]]:
    """The events in a node's JSONL log (unreadable lines skipped)."""
    path = data_root / EVENTS_LOG
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


def compute_summary(config: ClusterConfig, ledgers: Path,
                    duration_seconds: float) -> dict[str, Any]:
    """The demo's result; call it only after every process has stopped."""
    entries = ledger_entries(ledgers)
    coordinator = config.coordinator
    roots = [coordinator.data_root] + [h.data_root for h in config.hosts.values()
                                       if h.name != coordinator.name]
    verified = len(entries) - len(CoordinatorCheck(coordinator.data_root).unverified(entries))
    missing = [e for e in entries if find_intact_copy(e, roots) is None]
    per_node: dict[str, dict[str, int]] = {
        name: {"generated": 0, "pushed_files": 0, "pushed_bytes": 0} for name in config.hosts}
    for entry in entries:
        per_node.setdefault(entry.node, {"generated": 0, "pushed_files": 0, "pushed_bytes": 0})
        per_node[entry.node]["generated"] += 1
    bytes_moved = failed = events = 0
    deleted: set[tuple[str, str]] = set()
    pressure: dict[str, str] = {}
    for name, host in config.hosts.items():
        for event in read_events(host.data_root):
            events += 1
            payload = event.get("payload") or {}
            if event.get("type") == "DATA_SYNC_FAILED":
                failed += 1
            elif event.get("type") == "ARTIFACT_DELETED":
                deleted.add((name, str(payload.get("artifact"))))
            elif event.get("type") == "DISK_PRESSURE_CHANGED":
                level = str(payload.get("level"))
                if LEVELS.index(level) > LEVELS.index(pressure.get(name, "normal")):
                    pressure[name] = level
            elif (event.get("type") == "DATA_SYNC_COMPLETED"
                  and payload.get("strategy") != "receive"):
                moved = int(payload.get("bytes") or 0)
                bytes_moved += moved
                per_node[name]["pushed_files"] += int(payload.get("files") or 0)
                per_node[name]["pushed_bytes"] += moved
    deleted_entries = [e for e in entries if (e.node, f"{e.data_type}/{e.path}") in deleted]
    copies = [len(intact_copies(e, roots)) for e in deleted_entries]
    return {
        "generated": len(entries),
        "verified_on_coordinator": verified,
        "missing": len(missing),
        "missing_artifacts": [f"{e.node}:{e.data_type}/{e.path}" for e in missing[:20]],
        "bytes_moved": bytes_moved,
        "failed_transfers": failed,
        "deleted": len(deleted),
        "min_verified_copies": min(copies) if copies else None,
        "pressure": {name: pressure.get(name, "normal") for name, host in config.hosts.items()
                     if host.role == "gpu"},
        "duration_seconds": round(duration_seconds, 1),
        "nodes": len(config.hosts),
        "per_node": per_node,
        "events": events,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable version of :func:`compute_summary`'s result."""
    ok = "OK" if summary["missing"] == 0 else "DATA MISSING"
    lines = [
        f"ringsync demo: {ok} after {summary['duration_seconds']:g} s on {summary['nodes']} nodes",
        f"  generated                {summary['generated']}",
        f"  verified on coordinator  {summary['verified_on_coordinator']}",
        f"  missing (nowhere intact) {summary['missing']}",
        f"  bytes moved              {human_bytes(summary['bytes_moved'])}",
        f"  failed transfers         {summary['failed_transfers']}",
        f"  deleted under pressure   {summary['deleted']}"
        + ("" if summary["min_verified_copies"] is None
           else f" (each still on >= {summary['min_verified_copies']} nodes, intact)"),
        "  highest pressure         " + ", ".join(f"{n} {lvl}" for n, lvl in
                                                  summary["pressure"].items()),
        f"  events                   {summary['events']}",
    ]
    for name, row in summary["per_node"].items():
        if row["generated"] or row["pushed_files"]:
            lines.append(f"    {name:<12} generated {row['generated']:>4}   pushed "
                         f"{row['pushed_files']:>4} files, {human_bytes(row['pushed_bytes'])}")
    lines.extend(f"  MISSING {name}" for name in summary["missing_artifacts"])
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
