"""Replica verification on a real cluster: tampered or missing copies stop counting.

The coordinator runs embedded (as in the dashboard) so the test can read its manifest;
the GPU node that produced the artifacts is its own process.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest

from engine.facade import FacadeError, get_sync_facade
from engine.node import Node
from tests.support.cluster import TOKEN, Cluster, embedded_node, until, wait_for
from tests.support.files import sha_of, write

pytestmark = pytest.mark.cluster

NAMES = ("k/0big.npz", "k/a.npz", "k/b.npz")  # verified in this order (by path)


async def post_verify(node: Node, body: dict[str, Any]) -> tuple[int, str]:
    """POST /v1/control/verify to an embedded node (without blocking its loop)."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(f"{node.host.url}/v1/control/verify", json=body) as resp:
            return resp.status, await resp.text()


def summaries(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in cluster.events(node, "REPLICAS_VERIFIED")]


def holds(node: Node, path: str) -> bool:
    art = node.manifest.get_artifact("npz", path, origin="gpu-1")
    return art is not None and node.name in node.manifest.verified_holders(art)


async def test_verify_quarantines_a_tampered_copy_and_stops_counting_it(make_cluster) -> None:
    cluster = make_cluster(gpus=1, skip=("coord",))
    async with embedded_node(cluster, "coord") as coord:
        bodies = {"k/0big.npz": os.urandom(48 << 20), "k/a.npz": os.urandom(50_000),
                  "k/b.npz": os.urandom(60_000)}
        for path, body in bodies.items():
            write(cluster, "gpu-1", f"npz/{path}", body)
        await until(lambda: all(holds(coord, p) for p in NAMES), 20, "three verified copies")
        facade = get_sync_facade()

        # An untampered run: everything matches. A second request meanwhile is refused.
        assert await facade.verify(by="test") == {"node": "coord", "replicas": 3, "started": True}
        with pytest.raises(FacadeError, match="already running"):
            await facade.verify()
        assert await post_verify(coord, {"by": "test"}) == (409, f"a verification is already"
                                                            " running on coord")
        first = await until(lambda: summaries(cluster, "coord"), 20, "the first summary")
        assert {k: first[0][k] for k in ("checked", "matched", "mismatched", "missing")} == \
            {"checked": 3, "matched": 3, "mismatched": 0, "missing": 0}
        assert first[0]["requested_by"] == "test" and first[0]["node"] == "coord"

        # Tamper with one copy (same size), delete another.
        copy_a = cluster.stored("coord", "gpu-1", "npz/k/a.npz")
        copy_b = cluster.stored("coord", "gpu-1", "npz/k/b.npz")
        tampered = bytearray(bodies["k/b.npz"])
        tampered[1000] ^= 0xFF
        copy_b.write_bytes(bytes(tampered))
        copy_a.unlink()
        assert (await post_verify(coord, {}))[0] == 202
        second = (await until(lambda: summaries(cluster, "coord")[1:], 20, "the second run"))[0]
        assert {k: second[k] for k in ("checked", "matched", "mismatched", "missing")} == \
            {"checked": 3, "matched": 1, "mismatched": 1, "missing": 1}
        assert second["requested_by"] == "api"

        quarantined = {e["payload"]["artifact"]: e for e in
                       cluster.events("coord", "REPLICA_QUARANTINED")}
        assert set(quarantined) == {"npz/k/a.npz", "npz/k/b.npz"}
        bad = quarantined["npz/k/b.npz"]
        assert bad["severity"] == "error"
        assert bad["payload"]["expected_sha256"] == sha_of(cluster.data_root("gpu-1") / "npz/k/b.npz")
        assert bad["payload"]["quarantined_to"] == ".ringsync/quarantine/npz/gpu-1/k/b.npz"
        moved = cluster.data_root("coord") / bad["payload"]["quarantined_to"]
        assert moved.read_bytes() == bytes(tampered)
        assert bad["payload"]["actual_sha256"] == sha_of(moved)
        assert not copy_b.exists()
        assert (sha_of(cluster.stored("coord", "gpu-1", "npz/k/0big.npz"))
                == sha_of(cluster.data_root("gpu-1") / "npz/k/0big.npz"))
        gone = quarantined["npz/k/a.npz"]["payload"]
        assert gone["actual_sha256"] is None and gone["quarantined_to"] is None

        # Neither counts any more; the good copy does.
        assert [holds(coord, p) for p in NAMES] == [True, False, False]
        listing = await facade.node_artifacts("coord")
        replicas = {a["path"]: {r["node"] for r in a["replicas"]} - {a["origin"]}
                    for a in listing["artifacts"]}  # the origin's row for its source: not a copy
        assert replicas == {"k/0big.npz": {"coord"}, "k/a.npz": set(), "k/b.npz": set()}


def test_a_source_changed_behind_the_scanners_back_is_a_new_version_never_moved(
        make_cluster) -> None:
    """A source rewritten in place with its mtime put back is still seen as changed (its
    ctime moved): the new bytes are a new version, pushed beside the old one; the source is
    never moved or quarantined, and a verification (which checks stored copies, not a
    node's own sources) leaves it alone."""
    cluster = make_cluster(gpus=1)
    rel = "npz/k/src.npz"
    original = os.urandom(30_000)
    source = write(cluster, "gpu-1", rel, original)
    wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 15, what="the push")
    st = source.stat()
    changed = bytearray(original)
    changed[10] ^= 0xFF
    source.write_bytes(bytes(changed))
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime and size as before

    versions = wait_for(lambda: len(c := cluster.copies("coord", "gpu-1", rel)) == 2 and c, 15,
                        what="the new version on the coordinator")
    assert sorted(p.read_bytes() for p in versions) == sorted([original, bytes(changed)])
    resp = cluster.request("gpu-1", "POST", "/v1/control/verify", body=b'{"by": "test"}')
    assert resp.status == 202 and resp.json()["replicas"] == 0, resp.body
    summary = wait_for(lambda: summaries(cluster, "gpu-1"), 15, what="the summary")[0]
    assert (summary["checked"], summary["mismatched"], summary["matched"]) == (0, 0, 0)
    assert cluster.events("gpu-1", "REPLICA_QUARANTINED") == []
    assert source.read_bytes() == bytes(changed)  # the source is where it was, untouched
    assert not (cluster.data_root("gpu-1") / ".ringsync" / "quarantine").exists()
    current = [a for a in cluster.get_json("gpu-1", "/v1/artifacts")["artifacts"]
               if a["path"] == "k/src.npz"]
    assert [a["sha256"] for a in current] == [sha_of(source)]
