"""Sync figures per node and for the cluster, from nodes' ``/status`` answers.

``node_figures(status)`` reduces one node's status to what an operator asks first — how
much is waiting (pending), moving (in flight), done, failed, and how many bytes went out —
plus the figures of its strategy (gossip rounds and pulls, the ephemeral write-through
queue, ...). ``cluster_figures`` adds them up over the nodes, in total and per strategy.
Pure functions: the facade feeds them the statuses membership keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIGURES = ("pending", "pending_bytes", "in_flight", "done", "failed", "bytes")
"""The figures every node reports, whatever its strategy."""

_STRATEGY_FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gossip": ("gossip", ("rounds", "exchanges", "exchange_failures", "rows_merged",
                          "pulls_requested", "pulls_arrived", "bytes_sent", "bytes_received")),
    "ephemeral": ("write_through", ("queued", "safe_total")),
}
"""Strategy -> (where its figures are in the status, which numbers to add up)."""


def node_figures(status: Mapping[str, Any], state: str = "up") -> dict[str, Any]:
    """One node's figures from its ``/status`` (``state``: as membership sees it)."""
    sync = status.get("sync") or {}
    transfers = status.get("transfers") or {}
    in_flight = [t for t in transfers.get("in_flight", ()) if t.get("direction") == "out"]
    strategy = str(status.get("strategy") or sync.get("strategy") or "unknown")
    figures: dict[str, Any] = {
        "state": state, "strategy": strategy, "paused": bool(status.get("paused")),
        "pending": int(sync.get("pending", 0)), "pending_bytes": int(sync.get("pending_bytes", 0)),
        "in_flight": len(in_flight), "done": int(sync.get("pushed_files", 0)),
        "failed": int(sync.get("failed", 0)), "bytes": int(sync.get("pushed_bytes", 0)),
    }
    where, names = _STRATEGY_FIGURES.get(strategy, ("", ()))
    section = (status.get(where) or sync.get(where) or {}) if where else {}
    figures["strategy_figures"] = {n: section[n] for n in names
                                   if isinstance(section.get(n), (int, float))}
    return figures


def cluster_figures(nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over ``node_figures`` results, and the same per strategy."""
    total: dict[str, Any] = {name: 0 for name in FIGURES}
    strategies: dict[str, dict[str, Any]] = {}
    for figures in nodes.values():
        per = strategies.setdefault(figures["strategy"],
                                    {"nodes": 0, **{name: 0 for name in FIGURES}})
        per["nodes"] += 1
        for name in FIGURES:
            total[name] += figures[name]
            per[name] += figures[name]
        for name, value in figures["strategy_figures"].items():
            per[name] = per.get(name, 0) + value
    total["nodes"] = len(nodes)
    total["down"] = sorted(n for n, f in nodes.items() if f["state"] == "down")
    total["paused"] = sorted(n for n, f in nodes.items() if f["paused"])
    total["strategies"] = strategies
    return total
