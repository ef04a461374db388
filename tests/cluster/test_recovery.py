"""Recovery on a real cluster: under-replicated artifacts reach min_copies verified copies.

Cluster: coordinator, two GPU nodes, one CPU node (min_copies_before_delete = 2). A GPU
node's regular push only reaches the coordinator (1 copy); only a recovery run sends a
second copy anywhere, so each test fails if recovery does nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import pytest

from engine.facade import get_sync_facade
from tests.support.cluster import Cluster, embedded_node, until, wait_for
from tests.support.files import sha_of, write

pytestmark = pytest.mark.cluster


def recover(cluster: Cluster, node: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = cluster.request(node, "POST", "/v1/control/recover", body=json.dumps(body or {}).encode())
    assert resp.status == 202, (resp.status, resp.body)
    return resp.json()


def holders(cluster: Cluster, node: str, path: str) -> dict[str, str]:
    """Per ``node``'s manifest: holder -> hash of each verified copy of ``path`` besides its
    origin with the artifact's current hash (what ``verified_holders`` counts towards
    min_copies)."""
    for art in cluster.get_json(node, "/v1/artifacts?limit=5000")["artifacts"]:
        if art["path"] == path:
            return {r["node"]: r["sha256"] for r in art["replicas"]
                    if r["verified_at"] and r["sha256"] == art["sha256"]
                    and r["node"] != art["origin"]}
    return {}


def finished_database(cluster: Cluster, node: str, rel: str) -> None:
    path = cluster.data_root(node) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE games(game_id TEXT PRIMARY KEY, moves BLOB)")
    db.executemany("INSERT INTO games VALUES (?, ?)", [(f"g{i}", os.urandom(500)) for i in range(40)])
    db.commit()
    db.close()


@pytest.fixture
def four(make_cluster) -> Cluster:
    return make_cluster(gpus=2, cpus=1)


def test_recover_brings_artifacts_up_to_min_copies_verified(four: Cluster) -> None:
    write(four, "gpu-1", "npz/hex8_2p/r.npz", os.urandom(150_000))
    finished_database(four, "gpu-1", "games/hex8_2p/r.db")
    for path in ("hex8_2p/r.npz", "hex8_2p/r.db"):
        wait_for(lambda p=path: set(holders(four, "gpu-1", p)) == {"coord"}, 15,
                 what=f"{path} verified on the coordinator only")
    assert not four.copies("cpu-1", "gpu-1", "npz/hex8_2p/r.npz")

    answer = recover(four, "gpu-1")
    assert answer == {"node": "gpu-1", "under_replicated": 2, "scheduled": 2, "paused": False,
                      "reason": "operator_recovery"}
    for path in ("hex8_2p/r.npz", "hex8_2p/r.db"):  # the coordinator + the CPU node (non-GPU first)
        got = wait_for(lambda p=path: len(holders(four, "gpu-1", p)) >= 2
                       and holders(four, "gpu-1", p), 15, what=f"a second copy of {path}")
        assert set(got) == {"coord", "cpu-1"}
    for rel in ("npz/hex8_2p/r.npz", "games/hex8_2p/r.db"):
        copies = {n: sha_of(four.stored(n, "gpu-1", rel)) for n in ("coord", "cpu-1")}
        assert len(set(copies.values())) == 1, copies
        assert holders(four, "cpu-1", rel.split("/", 1)[1]) == {"cpu-1": copies["cpu-1"]}
    assert not four.copies("gpu-2", "gpu-1", "npz/hex8_2p/r.npz")  # 2 copies are enough
    db = sqlite3.connect(f"file:{four.stored('cpu-1', 'gpu-1', 'games/hex8_2p/r.db')}?mode=ro",
                         uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    recovery = [e for e in four.events("gpu-1") if e["payload"].get("reason") == "operator_recovery"]
    assert [e["type"] for e in recovery] == ["PRIORITY_SYNC_REQUESTED", "DATA_SYNC_STARTED",
                                             "DATA_SYNC_COMPLETED"]  # and no failure
    assert (recovery[2]["payload"]["target"], recovery[2]["payload"]["files"]) == ("cpu-1", 2)
    again = recover(four, "gpu-1", {"reason": "check", "by": "test"})
    assert (again["under_replicated"], again["scheduled"]) == (0, 0)


def test_recover_on_a_paused_node_starts_no_transfer(four: Cluster) -> None:
    write(four, "gpu-1", "npz/k/held.npz", os.urandom(40_000))
    wait_for(lambda: "coord" in holders(four, "gpu-1", "k/held.npz"), 15, what="the first copy")
    four.request("gpu-1", "POST", "/v1/control/pause", body=b'{"by": "test"}')
    answer = recover(four, "gpu-1")
    assert answer["paused"] is True and answer["under_replicated"] == 1
    assert answer["scheduled"] == 0
    cycles = four.status("gpu-1")["sync"]["cycles"]
    wait_for(lambda: four.status("gpu-1")["sync"]["cycles"] >= cycles + 3, 10, what="cycles")
    assert not four.copies("cpu-1", "gpu-1", "npz/k/held.npz")
    transfers = four.status("gpu-1")["transfers"]
    assert [t for t in transfers["recent"] + transfers["in_flight"] if t["target"] == "cpu-1"] == []
    assert not [e for e in four.events("gpu-1", "DATA_SYNC_STARTED")
                if e["payload"]["reason"] == "operator_recovery"]

    four.request("gpu-1", "POST", "/v1/control/resume", body=b"{}")
    assert recover(four, "gpu-1")["scheduled"] == 1
    wait_for(lambda: four.stored("cpu-1", "gpu-1", "npz/k/held.npz"), 15,
             what="the recovery push")


@pytest.mark.parametrize("body", [b'{"reason": ""}', b'{"reason": 5}', b'{"by": []}', b"[1]",
                                  b"not json"])
def test_recover_rejects_a_bad_body(four: Cluster, body: bytes) -> None:
    resp = four.request("gpu-1", "POST", "/v1/control/recover", body=body)
    assert resp.status == 400 and b"\n" not in resp.body.strip()


async def test_the_coordinator_rehomes_an_orphan_of_a_down_node(make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=1, skip=("coord",))
    async with embedded_node(cluster, "coord") as coord:
        body = os.urandom(120_000)
        write(cluster, "gpu-1", "npz/k/orphan.npz", body)
        await until(lambda: cluster.stored("coord", "gpu-1", "npz/k/orphan.npz"), 15,
                    "the first copy on the coordinator")
        cluster.stop_node("gpu-1")
        await until(lambda: coord.membership.is_down("gpu-1"), 10, "gpu-1 reported down")

        def copies() -> list[str]:
            return [n for n in ("gpu-2", "cpu-1")
                    if cluster.stored(n, "gpu-1", "npz/k/orphan.npz")]

        # the coordinator re-homes it by itself (every sync cycle), no operator needed
        placed = await until(copies, 15, "the coordinator's push of the orphan")
        await until(lambda: len(coord.manifest.verified_holders(coord.manifest.get_artifact(
            "npz", "k/orphan.npz", origin="gpu-1"))) >= 2, 10, "the receipt")
        result = await get_sync_facade().recover(reason="orphan_games_recovery", by="test")
        nodes = result["nodes"]
        assert set(nodes) == {"coord", "gpu-1", "gpu-2", "cpu-1"}
        assert "unreachable" in nodes["gpu-1"]["error"]
        # asked live: the coordinator's copy and the new one vouch, nothing more to do
        assert nodes["coord"] == {"node": "coord", "under_replicated": 0, "scheduled": 0,
                                  "paused": False, "reason": "orphan_games_recovery"}
        assert len(placed) == 1  # coordinator's copy + one more = min_copies besides the origin
        assert cluster.stored(placed[0], "gpu-1", "npz/k/orphan.npz").read_bytes() == body
        target_view = cluster.get_json(placed[0], "/v1/artifacts")["artifacts"][0]
        assert target_view["origin"] == "gpu-1" and target_view["path"] == "k/orphan.npz"
        art = coord.manifest.get_artifact("npz", "k/orphan.npz", origin="gpu-1")
        # (gpu-1's own row for its source arrives by manifest delta; it never counts)
        assert coord.manifest.verified_holders(art) - {"gpu-1"} == {"coord", placed[0]}
        done = [e["payload"] for e in cluster.events("coord", "DATA_SYNC_COMPLETED")
                if e["payload"]["source"] == "coord"]
        assert [(p["target"], p["reason"]) for p in done] == [(placed[0], "orphan_games_recovery")]
