"""Build dashboard values from node status answers (``GET /status``) and events.

Pure functions over plain dicts, so they are unit-tested without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ringsync_tui.model import (BandwidthRow, ClusterSnapshot, NodeRow, ScrubRow, Thresholds,
                                TransferRow)

MAX_RECENT = 30
"""Finished transfers the snapshot keeps (newest first)."""


def thresholds_of(status: Mapping[str, Any] | None) -> Thresholds:
    t = (status or {}).get("thresholds") or {}
    return Thresholds(push=float(t.get("push_percent", 50.0)),
                      urgent=float(t.get("urgent_percent", 70.0)),
                      cleanup=float(t.get("cleanup_percent", 75.0)),
                      min_copies=int(t.get("min_copies_before_delete", 2)))


def node_row(name: str, state: str, status: Mapping[str, Any] | None,
             host: Mapping[str, Any] | None = None, error: str | None = None) -> NodeRow:
    """A row from a node's last ``/status`` (None when it never answered)."""
    host = host or {}
    if not status:
        return NodeRow(name=name, role=str(host.get("role", "?")),
                       provider=str(host.get("provider", "?")), state=state, last_error=error,
                       ephemeral=bool(host.get("ephemeral", False)))
    disk, sync = status.get("disk") or {}, status.get("sync") or {}
    pressure = status.get("backpressure") or {}
    return NodeRow(
        name=name, role=str(status.get("role", "?")), provider=str(status.get("provider", "?")),
        state=state, used_bytes=int(disk.get("used_bytes", 0)),
        total_bytes=int(disk.get("total_bytes", 0)), percent=float(disk.get("percent", 0.0)),
        pending=int(sync.get("pending", 0)), pending_bytes=int(sync.get("pending_bytes", 0)),
        paused=bool(status.get("paused", False)), ephemeral=bool(status.get("ephemeral", False)),
        strategy=str(status.get("strategy", "")),
        last_error=error or sync.get("last_error"),
        backpressure=str(pressure["reason"]) if pressure.get("active") else None,
        open_breakers=tuple(sorted(
            target for target, b in ((status.get("routing") or {}).get("breakers") or {}).items()
            if isinstance(b, dict) and b.get("state") != "closed")),
        scrub=scrub_row(status.get("scrub")))


def scrub_row(scrub: Any) -> ScrubRow | None:
    """The scrub figures of a ``/status`` answer (None when it has none)."""
    if not isinstance(scrub, Mapping) or not scrub.get("enabled"):
        return None
    findings = scrub.get("findings") or {}
    return ScrubRow(passes=int(scrub.get("passes", 0)), position=int(scrub.get("position", 0)),
                    copies=int(scrub.get("copies", 0)),
                    rotted=int(findings.get("mismatched", 0)) + int(findings.get("missing", 0)),
                    rate_bytes_per_second=int(scrub.get("rate_bytes_per_second", 0)))


def transfer_row(node: str, t: Mapping[str, Any]) -> TransferRow:
    return TransferRow(
        key=f"{t.get('source', node)}:{t['id']}", source=str(t.get("source", node)),
        target=str(t["target"]), artifact=str(t["artifact"]), transport=str(t["transport"]),
        size=int(t["size"]), progress=float(t["progress"]), rate_bps=float(t["rate_bps"]),
        eta_seconds=t.get("eta_seconds"), attempt=int(t["attempt"]), started=float(t["started"]),
        finished=t.get("finished"), error=t.get("error"))


def bandwidth_rows(node: str, status: Mapping[str, Any]) -> list[BandwidthRow]:
    rows = []
    for host, b in sorted((status.get("bandwidth") or {}).items()):
        rows.append(BandwidthRow(
            node=node, host=host, limit_mbps=float(b.get("limit_mbps", 0.0)),
            allocated_mbps=float(b.get("allocated_mbps", 0.0)),
            current_mbps=float(b.get("current_mbps", 0.0)),
            active_transfers=int(b.get("active_transfers", 0))))
    return rows


def build_snapshot(coordinator: str, own_status: Mapping[str, Any],
                   members: Mapping[str, Mapping[str, Any]],
                   hosts: Mapping[str, Mapping[str, Any]] | None = None,
                   now: float | None = None) -> ClusterSnapshot:
    """A snapshot from the coordinator's own status and its membership view.

    ``members`` is ``{name: {"state", "status", "last_error"}}`` as the membership daemon
    serves it. A node that is down shows its last known disk but no live transfers: they
    are not moving.
    """
    hosts = hosts or {}
    nodes = [node_row(coordinator, "up", own_status, hosts.get(coordinator))]
    statuses: list[tuple[str, str, Mapping[str, Any]]] = [(coordinator, "up", own_status)]
    for name, member in sorted(members.items()):
        state, status = str(member.get("state", "unknown")), member.get("status")
        error = member.get("last_error") if state != "up" else None
        nodes.append(node_row(name, state, status, hosts.get(name), error))
        if status:
            statuses.append((name, state, status))
    live: list[TransferRow] = []
    recent: list[TransferRow] = []
    bandwidth: list[BandwidthRow] = []
    for name, state, status in statuses:
        transfers = status.get("transfers") or {}
        if state != "down":
            live.extend(transfer_row(name, t) for t in transfers.get("in_flight", ())
                        if t.get("direction", "out") == "out")
            bandwidth.extend(bandwidth_rows(name, status))
        recent.extend(transfer_row(name, t) for t in transfers.get("recent", ())
                      if t.get("direction", "out") == "out")
    live.sort(key=lambda t: (t.started, t.key))
    recent.sort(key=lambda t: (-(t.finished or 0.0), t.key))
    return ClusterSnapshot(
        taken_at=time.time() if now is None else now, coordinator=coordinator,
        thresholds=thresholds_of(own_status), nodes=tuple(nodes), live=tuple(live),
        recent=tuple(recent[:MAX_RECENT]), bandwidth=tuple(bandwidth))


def sorted_nodes(snapshot: ClusterSnapshot) -> list[NodeRow]:
    """The nodes pane's order: trouble on top."""
    return sorted(snapshot.nodes, key=lambda n: n.sort_key(snapshot.thresholds))

