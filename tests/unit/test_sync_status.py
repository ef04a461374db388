"""engine.sync_status: per-node and cluster sync figures from /status answers."""

from __future__ import annotations

from typing import Any

import pytest

from engine.sync_status import cluster_figures, node_figures

pytestmark = pytest.mark.unit


def status(strategy: str, pending: int, done: int, failed: int, sent: int,
           out: int = 0, **extra: Any) -> dict[str, Any]:
    sync = {"strategy": strategy, "pending": pending, "pending_bytes": pending * 10,
            "pushed_files": done, "pushed_bytes": sent, "failed": failed}
    sync.update(extra.pop("sync", {}))
    flights = [{"direction": "out"}] * out + [{"direction": "in"}]
    return {"strategy": strategy, "paused": False, "sync": sync,
            "transfers": {"in_flight": flights, "recent": []}, **extra}


def test_a_node_reports_the_common_figures_and_its_strategy_s_own() -> None:
    gossip = node_figures(status("gossip", 1, 4, 0, 400, out=2,
                                 gossip={"rounds": 7, "pulls_requested": 3, "peers": ["x"]}))
    assert gossip == {"state": "up", "strategy": "gossip", "paused": False, "pending": 1,
                      "pending_bytes": 10, "in_flight": 2, "done": 4, "failed": 0, "bytes": 400,
                      "strategy_figures": {"rounds": 7, "pulls_requested": 3}}
    spot = node_figures(status("ephemeral", 0, 1, 1, 9,
                               sync={"write_through": {"queued": 2, "safe_total": 5}}))
    assert spot["strategy_figures"] == {"queued": 2, "safe_total": 5}
    assert node_figures({}, "down")["state"] == "down"  # never answered: zeros, not an error


def test_the_cluster_adds_up_in_total_and_per_strategy() -> None:
    nodes = {
        "gpu-1": node_figures(status("gossip", 1, 4, 0, 400, gossip={"rounds": 7})),
        "gpu-2": node_figures(status("gossip", 2, 1, 3, 100, gossip={"rounds": 5})),
        "gpu-3": node_figures(status("ephemeral", 0, 6, 0, 600, out=1,
                                     sync={"write_through": {"queued": 0, "safe_total": 6}})),
        "cpu-1": node_figures({}, "down"),
    }
    total = cluster_figures(nodes)
    assert {k: total[k] for k in ("pending", "in_flight", "done", "failed", "bytes", "nodes")} \
        == {"pending": 3, "in_flight": 1, "done": 11, "failed": 3, "bytes": 1100, "nodes": 4}
    assert total["down"] == ["cpu-1"]
    assert total["strategies"]["gossip"]["rounds"] == 12
    assert total["strategies"]["gossip"]["nodes"] == 2
    assert total["strategies"]["ephemeral"]["safe_total"] == 6
