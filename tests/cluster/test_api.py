"""The node HTTP API: token, status, health, bandwidth, manifest deltas, SSE events."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time

import pytest

from tests.support.cluster import TOKEN, Cluster, wait_for
from tests.support.objects import put

pytestmark = pytest.mark.cluster

PROTECTED = ["/status", "/bandwidth/status", "/metrics", "/v1/manifest", "/v1/events?follow=0",
             "/v1/cluster", "/v1/artifacts", "/v1/objects/npz/x.npz"]


@pytest.fixture(scope="module")
def one(make_module_cluster) -> Cluster:
    """Shared by the module: tests use distinct object names and undo what they change."""
    return make_module_cluster(gpus=1, config={"bandwidth_limits": {"providers": {"hetzner": 700}}})


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_every_route_but_health_needs_the_token(one: Cluster, path: str, token) -> None:
    assert one.request("coord", "GET", path, token=token).status == 401


@pytest.mark.parametrize("method,path", [("PUT", "/v1/objects/npz/x.npz"),
                                         ("HEAD", "/v1/objects/npz/x.npz"),
                                         ("POST", "/v1/control/pause"),
                                         ("POST", "/v1/control/priority-sync"),
                                         ("POST", "/v1/control/recover"),
                                         ("POST", "/v1/control/verify"),
                                         ("POST", "/v1/held"),
                                         ("POST", "/v1/staged")])
def test_writes_and_controls_need_the_token(one: Cluster, method: str, path: str) -> None:
    assert one.request("gpu-1", method, path, body=b"{}", token="nope").status == 401
    assert not [p for p in (one.data_root("gpu-1") / "npz").rglob("x*") if p.is_file()]
    assert one.status("gpu-1")["paused"] is False


def test_health_is_open_and_structured(one: Cluster) -> None:
    resp = one.request("coord", "GET", "/health", token=None)
    body = resp.json()
    assert resp.status == 200 and body["is_healthy"] is True
    assert set(body) == {"is_healthy", "message", "details"}
    components = {"auto_sync", "router", "membership", "manifest_pull", "backpressure",
                  "live_snapshots", "verification", "scrub", "transport:http", "hooks"}
    assert components <= set(body["details"])
    for part in body["details"].values():  # each component is a HealthCheckResult of its own
        assert set(part) == {"is_healthy", "message", "details"} and part["is_healthy"] is True
    gpu = one.request("gpu-1", "GET", "/health", token=None).json()["details"]
    assert {"sync_push", "transport:http", "router", "backpressure", "scrub"} <= set(gpu)


def test_an_unhealthy_component_makes_health_503_and_names_it(make_cluster) -> None:
    cluster = make_cluster(gpus=1, config={"hooks": [{"event": "SYNC_PAUSED",
                                                       "command": ["false"]}]})
    for _ in range(3):  # three failed runs in a row: the hooks component is unhealthy
        cluster.request("gpu-1", "POST", "/v1/control/pause", body=b"{}")
        cluster.request("gpu-1", "POST", "/v1/control/resume", body=b"{}")
        time.sleep(0.3)
    wait_for(lambda: cluster.request("gpu-1", "GET", "/health", token=None).status == 503, 10,
             what="/health to turn 503")
    body = cluster.request("gpu-1", "GET", "/health", token=None).json()
    assert body["is_healthy"] is False and "hooks" in body["message"]
    assert body["details"]["hooks"]["is_healthy"] is False
    assert len(cluster.events("gpu-1", "HOOK_FAILED")) >= 3


def test_status_describes_the_node(one: Cluster) -> None:
    status = one.status("gpu-1")
    assert status["node"] == "gpu-1" and status["role"] == "gpu"
    assert status["provider"] == "lambda"
    assert status["strategy"] == "push_from_generator" and status["paused"] is False
    disk = status["disk"]
    assert disk["total_bytes"] > 0 and 0 <= disk["percent"] <= 100
    assert set(status["transfers"]) == {"in_flight", "recent"}
    assert isinstance(status["artifacts"], dict)
    assert status["root_id"] and status["manifest_id"] and "scrub" in status
    assert status["root_id"] != one.status("coord")["root_id"]


def test_a_restart_keeps_the_root_id_and_takes_a_new_manifest_incarnation(make_cluster) -> None:
    cluster = make_cluster(gpus=1)
    before = cluster.status("gpu-1")
    assert (cluster.data_root("gpu-1") / ".ringsync" / "root_id").read_text().strip() \
        == before["root_id"]
    assert cluster.stop_node("gpu-1") == 0
    cluster.start_node("gpu-1")
    after = cluster.status("gpu-1")
    assert after["root_id"] == before["root_id"]
    assert after["manifest_id"] != before["manifest_id"]
    assert cluster.get_json("gpu-1", "/v1/manifest?since=0")["manifest_id"] == after["manifest_id"]


def test_a_second_node_on_a_data_root_refuses_to_start(tmp_path) -> None:
    """gpu-2's data root is gpu-1's under another name (a symlink, like one export mounted
    twice): whichever starts second refuses, with one line naming both."""
    shared = tmp_path / "shared"
    cluster = Cluster(tmp_path / "c", gpus=2, config={"hosts": {"gpu-2": {"data_root": str(shared)}}})
    cluster.data_root("gpu-1").mkdir(parents=True)
    shared.symlink_to(cluster.data_root("gpu-1"), target_is_directory=True)
    try:
        cluster.start(skip=("gpu-2",))
        root_id = cluster.status("gpu-1")["root_id"]
        cluster.start_node("gpu-2", wait=False)
        assert cluster.nodes["gpu-2"].proc.wait(20) == 1
        said = [line for line in cluster.log("gpu-2").splitlines() if line.strip()]
        assert len(said) == 1 and "gpu-1" in said[0] and "gpu-2" in said[0], said
        assert "Traceback" not in cluster.log("gpu-2")
        assert cluster.status("gpu-1")["root_id"] == root_id  # the running node is untouched
        assert cluster.request("gpu-1", "GET", "/health", token=None).status == 200
    finally:
        cluster.stop_all()


def test_a_vouch_rehashes_the_version_it_is_asked_about(one: Cluster) -> None:
    body = os.urandom(4000)
    assert put(one, "coord", "npz", "k/vouched.npz", body).status == 201
    digest = hashlib.sha256(body).hexdigest()
    ask = f"/v1/vouch/npz/k/vouched.npz?origin=gpu-1&sha256={digest}"
    first = one.get_json("coord", ask)
    assert set(first) == {"node", "root_id", "origin", "data_type", "path", "sha256", "size",
                          "hashed_at", "rehashed"}
    assert (first["node"], first["origin"], first["sha256"], first["size"], first["rehashed"]) \
        == ("coord", "gpu-1", digest, 4000, True)
    assert first["root_id"] == one.status("coord")["root_id"]
    second = one.get_json("coord", ask)
    assert second["hashed_at"] > first["hashed_at"]  # hashed again, never from a cache
    assert one.request("coord", "GET", ask + "&max_age=60").status == 400
    assert one.request("coord", "GET", ask.replace("origin=gpu-1", "origin=nobody")).status == 400
    assert one.request("coord", "GET", ask.replace(digest, "0" * 64)).status == 404
    assert one.request("coord", "GET", ask.replace("origin=gpu-1", "origin=coord")).status == 404
    assert one.request("coord", "GET", "/v1/vouch/npz/k/vouched.npz").status == 400


def test_held_answers_which_versions_are_here_in_one_request(one: Cluster) -> None:
    body = os.urandom(5_000)
    assert put(one, "coord", "npz", "held/a.npz", body).status == 201
    sha = hashlib.sha256(body).hexdigest()
    files = [{"data_type": "npz", "path": "held/a.npz", "sha256": sha, "origin": "gpu-1"},
             {"data_type": "npz", "path": "held/a.npz", "sha256": "0" * 64, "origin": "gpu-1"},
             {"data_type": "npz", "path": "held/a.npz", "sha256": sha, "origin": "nobody"},
             {"data_type": "npz", "path": "../escape.npz", "sha256": sha, "origin": "gpu-1"}]
    resp = one.request("coord", "POST", "/v1/held", body=json.dumps({"files": files}).encode(),
                       headers={"Content-Type": "application/json"})
    assert resp.status == 200, resp.body
    held, other, unknown, escape = resp.json()["results"]
    assert held["status"] == 200 and held["sha256"] == sha and held["verified_at"] > 0
    assert held["root_id"] == one.status("coord")["root_id"]
    assert other == {"status": 404}  # another version of the same file is not held
    assert unknown["status"] == 400 and "unknown origin" in unknown["error"]
    assert escape["status"] == 400
    bad = one.request("coord", "POST", "/v1/held", body=b'{"files": [{"path": 1}]}',
                      headers={"Content-Type": "application/json"})
    assert bad.status == 400 and b"body must be" in bad.body


def test_quota_is_the_capacity_and_is_enforced(make_cluster) -> None:
    cluster = make_cluster(gpus=1, quota="1MiB")
    disk = cluster.status("gpu-1")["disk"]
    assert disk["total_bytes"] == 1024 * 1024 and disk["quota_bytes"] == disk["total_bytes"]
    resp = put(cluster, "gpu-1", "npz", "big.npz", os.urandom(2 * 1024 * 1024), origin="coord")
    assert resp.status == 507
    assert not cluster.copies("gpu-1", "coord", "npz/big.npz")


def test_manifest_since_returns_only_changes(one: Cluster) -> None:
    start = one.status("coord")["manifest_seq"]
    put(one, "coord", "npz", "a.npz", b"a" * 100)
    first = one.get_json("coord", f"/v1/manifest?since={start}")
    assert [a["path"] for a in first["artifacts"]] == ["a.npz"] and first["complete"]
    assert [a["origin"] for a in first["artifacts"]] == ["gpu-1"] and first["manifest_id"]
    assert [(r["origin"], r["root_id"]) for r in first["replicas"]] == \
        [("gpu-1", one.status("coord")["root_id"])]
    assert [r["origin"] for r in first["receipts"]] == ["gpu-1"]
    put(one, "coord", "npz", "b.npz", b"b" * 100)
    delta = one.get_json("coord", f"/v1/manifest?since={first['seq']}")
    assert [a["path"] for a in delta["artifacts"]] == ["b.npz"]
    assert [r["path"] for r in delta["receipts"]] == ["b.npz"]
    assert delta["seq"] > first["seq"]
    empty = one.get_json("coord", f"/v1/manifest?since={delta['seq']}")
    assert empty["artifacts"] == [] and empty["receipts"] == [] and empty["seq"] == delta["seq"]


@pytest.mark.parametrize("query", ["since=abc", "since=-1", "limit=0"])
def test_manifest_rejects_bad_queries(one: Cluster, query: str) -> None:
    assert one.request("coord", "GET", f"/v1/manifest?{query}").status == 400


def read_sse(cluster: Cluster, node: str, query: str, count: int) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.nodes[node].port, timeout=10)
    conn.request("GET", f"/v1/events?{query}", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    events, fields = [], {}
    try:
        while len(events) < count:
            line = resp.fp.readline().decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if not line:
                if "data" in fields:
                    events.append({"id": int(fields["id"]), "event": fields["event"],
                                   "data": json.loads(fields["data"])})
                fields = {}
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
    finally:
        conn.close()
    return events


def test_events_stream_live_and_resume(one: Cluster) -> None:
    start = one.status("coord")["events_seq"]
    put(one, "coord", "npz", "e1.npz", b"1" * 10)
    put(one, "coord", "npz", "e2.npz", b"2" * 10)
    everything = read_sse(one, "coord", f"since={start}&follow=0", 2)
    names = [e["data"]["payload"]["artifacts"] for e in everything
             if e["event"] == "DATA_SYNC_COMPLETED"]
    assert names[-2:] == [["npz/e1.npz"], ["npz/e2.npz"]]
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    # Resume from the first event: exactly the later ones come back.
    later = read_sse(one, "coord", f"since={everything[0]['id']}&follow=0", len(everything) - 1)
    assert [e["id"] for e in later] == [e["id"] for e in everything[1:]]
    # A live follower sees a new event as it happens.
    import threading
    got: list[dict] = []
    reader = threading.Thread(target=lambda: got.extend(
        read_sse(one, "coord", f"since={everything[-1]['id']}", 1)))
    reader.start()
    put(one, "coord", "npz", "e3.npz", b"3" * 10)
    reader.join(10)
    assert got and got[0]["data"]["payload"]["artifacts"] == ["npz/e3.npz"]


def test_every_logged_event_fits_its_schema(one: Cluster) -> None:
    from engine.events import Event

    put(one, "coord", "npz", "s.npz", b"s" * 10)
    put(one, "coord", "npz", "bad.npz", b"s" * 10, declared_sha="0" * 64)
    one.request("gpu-1", "POST", "/v1/control/pause", body=b"{}")
    one.request("gpu-1", "POST", "/v1/control/resume", body=b"{}")
    logged = one.events("coord") + one.events("gpu-1")
    assert {"DATA_SYNC_COMPLETED", "DATA_SYNC_FAILED", "SYNC_PAUSED"} <= {e["type"] for e in logged}
    for raw in logged:
        assert Event.from_dict(raw).to_dict() == raw


def test_bandwidth_status_shows_the_provider_limit(one: Cluster) -> None:
    f = one.data_root("gpu-1") / "npz" / "k" / "bw.npz"
    f.parent.mkdir(parents=True)
    f.write_bytes(os.urandom(1000))

    def coord_budget() -> dict | None:
        hosts = one.get_json("gpu-1", "/bandwidth/status")["hosts"]
        return hosts.get("coord") if hosts.get("coord", {}).get("total_bytes", 0) >= 1000 else None

    budget = wait_for(coord_budget, 10, what="the push to draw from coord's budget")
    assert budget["limit_mbps"] == 700  # coord's provider (hetzner) limit
    in_status = one.status("gpu-1")["bandwidth"]["coord"]  # the same figures in /status
    assert set(in_status) == {"limit_mbps", "allocated_mbps", "active_transfers", "current_mbps"}
    assert in_status["limit_mbps"] == 700 and in_status["active_transfers"] >= 0


def test_metrics_in_prometheus_format(one: Cluster) -> None:
    put(one, "coord", "npz", "metrics.npz", b"m" * 10)
    resp = one.request("coord", "GET", "/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.body.decode()
    assert 'ringsync_disk_capacity_bytes{node="coord"}' in text
    assert 'ringsync_events_total{node="coord",type="DATA_SYNC_COMPLETED"}' in text
    assert 'ringsync_member_up{member="gpu-1",node="coord"}' in text


def test_artifacts_are_listed_newest_first_with_their_replicas(make_cluster) -> None:
    cluster = make_cluster(gpus=1)
    now = time.time()
    for name, age in (("mid", 50), ("new", 10), ("old", 100)):  # written out of mtime order
        path = cluster.data_root("gpu-1") / "npz" / "k" / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(os.urandom(1000))
        os.utime(tmp, (now - age, now - age))
        tmp.rename(path)

    def listing() -> dict | None:
        answer = cluster.get_json("gpu-1", "/v1/artifacts")
        pushed = all({r["node"] for r in a["replicas"]} == {"gpu-1", "coord"}
                     for a in answer["artifacts"])
        return answer if answer["total"] == 3 and pushed else None

    answer = wait_for(listing, 15, what="three artifacts, each on the coordinator")
    assert answer["node"] == "gpu-1"
    assert [a["path"] for a in answer["artifacts"]] == ["k/new.npz", "k/mid.npz", "k/old.npz"]
    first = answer["artifacts"][0]
    assert set(first) == {"data_type", "path", "config_key", "size", "sha256", "mtime", "origin",
                          "replicas"}
    assert (first["data_type"], first["config_key"], first["size"], first["origin"]) == \
        ("npz", "k", 1000, "gpu-1")
    assert abs(first["mtime"] - (now - 10)) < 1
    for rep in first["replicas"]:
        assert set(rep) == {"node", "sha256", "verified_at"}
        assert rep["sha256"] == first["sha256"] and rep["verified_at"] > 0
    two = cluster.get_json("gpu-1", "/v1/artifacts?limit=2")
    assert two["total"] == 3 and [a["path"] for a in two["artifacts"]] == ["k/new.npz", "k/mid.npz"]


@pytest.mark.parametrize("limit", ["0", "5001", "-1", "abc", ""])
def test_artifacts_rejects_a_bad_limit(one: Cluster, limit: str) -> None:
    resp = one.request("coord", "GET", f"/v1/artifacts?limit={limit}")
    assert resp.status == 400
    message = resp.body.decode().strip()
    assert "limit" in message and "\n" not in message
