"""engine.gossip.protocol: push-pull delta exchanges between real manifests, JSON on the wire."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.gossip import Gossip, ProtocolError
from engine.manifest import Artifact, ClusterManifest, Replica, SyncReceipt

pytestmark = pytest.mark.unit

SHA_A = "a" * 64
MTIME = 1_700_000_000.5


def art(path: str, origin: str) -> Artifact:
    return Artifact("npz", path, "k", 100, SHA_A, MTIME, origin, 100, int(MTIME * 1e9))


def own(m: ClusterManifest, path: str) -> Artifact:
    """An artifact of ``m``'s node with its own verified replica, as the scanner registers it."""
    a = art(path, m.node)
    m.upsert_artifact(a)
    m.set_replica(Replica("npz", path, m.node, SHA_A, 1.0, origin=m.node))
    return a


@dataclass
class Trip:
    """What one exchange cost."""

    request: int
    answer: int
    follow_up: int
    """Bytes of the follow-up delta and its reply (0: none was sent)."""

    @property
    def total(self) -> int:
        return self.request + self.answer + self.follow_up


def _wire(msg: object) -> tuple[object, int]:
    raw = json.dumps(msg, separators=(",", ":")).encode()
    return json.loads(raw), len(raw)


def two_peers(gossip: Callable[..., Gossip], files: int) -> tuple[Gossip, Gossip]:
    """gpu-1 and gpu-2, each with ``files`` own artifacts (a0.npz.. and b0.npz..)."""
    a, b = gossip("gpu-1"), gossip("gpu-2")
    for i in range(files):
        own(a.manifest, f"a{i}.npz")
        own(b.manifest, f"b{i}.npz")
    return a, b


def exchange(r: Gossip, p: Gossip) -> Trip:
    """One exchange, requester ``r`` with peer ``p``, every message through JSON."""
    peer = p.manifest.node
    req, req_bytes = _wire(r.request(peer))
    answer, answer_bytes = _wire(p.answer(req))
    r.absorb(peer, req, answer)  # type: ignore[arg-type]
    delta = r.follow_up(peer, answer)  # type: ignore[arg-type]
    if delta is None:
        return Trip(req_bytes, answer_bytes, 0)
    delta, delta_bytes = _wire(delta)
    reply, reply_bytes = _wire(p.take_delta(delta))
    r.acknowledge(peer, answer, reply)  # type: ignore[arg-type]
    return Trip(req_bytes, answer_bytes, delta_bytes + reply_bytes)


@pytest.fixture
def gossip(tmp_path: Path) -> Iterator[Callable[..., Gossip]]:
    """``gossip(name)``: a Gossip over a fresh manifest of ``name`` (closed after the test)."""
    opened: list[ClusterManifest] = []

    def make(name: str, file: str | None = None, **kwargs: object) -> Gossip:
        opened.append(ClusterManifest(tmp_path / f"{file or name}.db", name))
        return Gossip(opened[-1], **kwargs)  # type: ignore[arg-type]

    yield make
    for m in opened:
        m.close()


def known(g: Gossip) -> set[str]:
    return {a.path for a in g.manifest.artifacts()}


def holders(g: Gossip, path: str) -> set[str]:
    """Nodes with a live replica row of any origin's version of ``npz/path``."""
    rows = g.manifest._db.execute("SELECT node FROM replicas WHERE data_type='npz' AND path=?"
                                  " AND removed=0", (path,))
    return {r["node"] for r in rows}


def test_one_exchange_pushes_and_pulls(gossip) -> None:
    a, b = gossip("gpu-1"), gossip("gpu-2")
    own(a.manifest, "a1.npz")
    own(b.manifest, "b1.npz")
    trip = exchange(a, b)
    assert trip.follow_up > 0  # a's rows went in the follow-up
    assert known(a) == known(b) == {"a1.npz", "b1.npz"}
    assert holders(a, "b1.npz") == holders(b, "b1.npz") == {"gpu-2"}
    assert holders(b, "a1.npz") == {"gpu-1"}


def test_a_second_exchange_is_idle_one_round_trip_under_1kb(gossip) -> None:
    a, b = two_peers(gossip, 5)
    exchange(a, b)
    seqs = (a.manifest.seq, b.manifest.seq)
    for r, p in ((a, b), (b, a), (a, b), (b, a)):
        trip = exchange(r, p)
        assert trip.follow_up == 0, "an idle exchange needs no follow-up"
        assert trip.total < 1024, trip
    assert (a.manifest.seq, b.manifest.seq) == seqs  # nothing changed either side
    answer = b.answer(a.request("gpu-2"))
    assert answer["want_since"] is None
    assert not any(answer.get(t) for t in ("artifacts", "replicas", "deletions"))


def test_echoes_of_the_peers_own_rows_are_not_sent_back(gossip) -> None:
    a, b = gossip("gpu-1"), gossip("gpu-2")
    exchange(a, b)
    own(b.manifest, "b1.npz")
    exchange(a, b)  # a merges b's row: a's seq moves, but only by b's own rows
    trip = exchange(a, b)
    assert trip.follow_up == 0
    assert b.manifest.peer_cursor("gpu-1", relay=True) == a.manifest.seq  # quiet_until moved it


def test_an_artifact_crosses_hops_between_nodes_that_never_talk(gossip) -> None:
    a, b, c = gossip("gpu-1"), gossip("gpu-2"), gossip("gpu-3")
    own(a.manifest, "a1.npz")
    exchange(b, a)
    exchange(c, b)  # c never exchanges with a
    assert c.manifest.get_artifact("npz", "a1.npz") == art("a1.npz", "gpu-1")
    assert holders(c, "a1.npz") == set()  # a's replica row is second-hand at b: not believed
    own(c.manifest, "c1.npz")
    exchange(b, c)
    exchange(a, b)
    assert known(a) == {"a1.npz", "c1.npz"}
    assert holders(a, "c1.npz") == set()


def test_a_holders_replica_spreads_only_from_the_holder(gossip) -> None:
    a, b, c = gossip("gpu-1"), gossip("gpu-2"), gossip("gpu-3")
    own(a.manifest, "a1.npz")
    exchange(b, a)
    b.manifest.register_sync(SyncReceipt("npz", "a1.npz", "gpu-1", "gpu-2", SHA_A, 100, 5.0,
                                         "http", origin="gpu-1"))
    exchange(c, b)
    assert holders(c, "a1.npz") == {"gpu-2"}
    exchange(a, c)
    assert holders(a, "a1.npz") == {"gpu-1"}  # gpu-2's row reached a only second-hand


def test_a_wiped_peer_is_read_again_and_refilled(gossip) -> None:
    a, b = two_peers(gossip, 3)
    exchange(a, b)
    exchange(b, a)
    b.manifest.close()
    fresh = gossip("gpu-2", file="gpu-2-wiped")  # same node, new data root: new manifest_id
    own(fresh.manifest, "new.npz")
    exchange(a, fresh)
    assert a.manifest.peer_manifest_id("gpu-2", relay=True) == fresh.manifest.manifest_id
    assert "new.npz" in known(a)
    assert known(fresh) == {"new.npz"} | {f"a{i}.npz" for i in range(3)}  # refilled by a
    # (its own old rows, held by a second-hand, are never taken back: rows about itself)
    assert exchange(a, fresh).follow_up == 0
    assert exchange(fresh, a).follow_up == 0


def test_a_wiped_requester_is_refilled_by_its_peer(gossip) -> None:
    a, b = gossip("gpu-1"), gossip("gpu-2")
    own(a.manifest, "a1.npz")
    exchange(a, b)
    exchange(b, a)
    a.manifest.close()
    fresh = gossip("gpu-1", file="gpu-1-wiped")
    own(fresh.manifest, "a2.npz")
    answer = b.answer(fresh.request("gpu-2"))
    assert answer["want_since"] == 0  # b's cursor counted in the old numbering
    exchange(fresh, b)
    assert "a2.npz" in known(b)
    assert b.manifest.peer_manifest_id("gpu-1", relay=True) == fresh.manifest.manifest_id
    assert "a1.npz" not in known(fresh)  # a node never takes rows about itself
    assert exchange(fresh, b).follow_up == 0


def test_paged_deltas_converge_over_several_exchanges(gossip) -> None:
    a, b = gossip("gpu-1", limit=3), gossip("gpu-2", limit=3)
    for i in range(10):
        own(a.manifest, f"a{i}.npz")
    for _ in range(10):
        exchange(b, a)
    assert known(b) == known(a)
    assert b.manifest.peer_cursor("gpu-1", relay=True) == a.manifest.seq


def test_answers_carry_the_peers_disk_and_backpressure(gossip) -> None:
    a = gossip("gpu-1")
    b = gossip("gpu-2", stats=lambda: {"disk_percent": 42.5, "backpressure": "queue"})
    exchange(a, b)
    assert (a.peers["gpu-2"].disk_percent, a.peers["gpu-2"].backpressure) == (42.5, "queue")


@pytest.mark.parametrize("body, message", [
    ([], "must be a JSON object"),
    ({"manifest_id": "x", "seq": 1, "since": 0}, "lacks 'node'"),
    ({"node": "gpu-1", "manifest_id": "x", "seq": "1", "since": 0}, "'seq' must be int"),
    ({"node": "gpu-1", "manifest_id": "x", "seq": -1, "since": 0}, "must not be negative"),
    ({"node": "gpu-1", "manifest_id": "x", "seq": True, "since": 0}, "not a boolean"),
    ({"node": "gpu-2", "manifest_id": "x", "seq": 1, "since": 0}, "with itself"),
])
def test_a_bad_request_is_refused_with_what_is_wrong(gossip, body, message) -> None:
    with pytest.raises(ProtocolError, match=message):
        gossip("gpu-2").answer(body)


def test_a_bad_delta_is_refused_and_changes_nothing(gossip) -> None:
    a, b = gossip("gpu-1"), gossip("gpu-2")
    own(a.manifest, "a1.npz")
    good = a.delta_for("gpu-2", 0)
    bad_path = {**good, "artifacts": [{**good["artifacts"][0], "path": "../../etc/passwd"}]}
    with pytest.raises(ProtocolError, match="forbidden segment"):
        b.take_delta(bad_path)
    missing = {**good, "artifacts": [{k: v for k, v in good["artifacts"][0].items()
                                      if k != "sha256"}]}
    with pytest.raises(ProtocolError, match="lacks 'sha256'"):
        b.take_delta(missing)
    outside = {**good, "since": good["seq"]}
    with pytest.raises(ProtocolError, match="outside"):
        b.take_delta(outside)
    with pytest.raises(ProtocolError, match="not 'gpu-3'"):
        b.absorb("gpu-3", {"seq": 0}, good)
    assert b.manifest.seq == 0 and known(b) == set()
    assert b.take_delta(good)["merged"] == 2
