"""The gossip protocol, pure: build, answer and absorb manifest-delta exchanges (no I/O).

One exchange, requester R with peer P (push-pull, one round trip when R has nothing new):

    R -> P  request   R's digest: node, manifest_id, seq; ``since`` = R's relay cursor of P
                      and ``peer_id`` = the P numbering it counts in; ``have`` = what R
                      believes P merged of R (P's cursor of R as P last reported it) and
                      ``quiet_until`` when R's rows after ``have`` hold nothing for P
    P -> R  answer    P's delta since ``since`` (from 0 when ``peer_id`` is not P's current
                      manifest) + ``want_since``: P's cursor of R when R's seq is ahead of
                      it, else null; + P's disk percent and backpressure (``stats``)
    R -> P  delta     only when ``want_since`` is not null and R has rows for P:
                      R's delta since ``want_since``; P replies with its new cursor of R

Both sides merge with ``ClusterManifest.merge_peer(..., relay=True)`` (artifact rows of
every origin, replica and deletion rows first-hand only). A delta keeps only the rows the
receiver can take: artifacts of origins other than the receiver, the sender's own replica
and deletion rows, and none of the rows the sender took from the receiver itself (its
``echoes``: the local sequence numbers of merges of that peer's rows; the peer has them).
The cursor still moves past the rows left out, so nothing is lost: the receiver would
not have taken them. ``quiet_until`` lets P move its cursor past a stretch of R's
sequence numbers that holds nothing for P (typically R's merges of P's own rows) without
a follow-up. P accepts it only when R made it for P's current manifest (``peer_id``) and
only from the cursor R says P reported (``merge_peer``'s ``since <= cursor`` rule, which
also restarts from 0 when R's manifest id changed), so no row is ever skipped over.

What a node knows of its peers' view of it (``PeerView``) lives in memory; after a restart
the first exchange with each peer costs one follow-up at most. The answering side needs no
state of its own beyond the manifest. The simulation (``bench/gossip_sim.py``) runs this
very class over JSON-encoded messages; the daemon runs it over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import describe
from engine.gossip.messages import (DELTA_TABLES, ProtocolError, check_answer, check_delta,
                                    check_reply, check_request)
from engine.manifest import ClusterManifest

PAGE_LIMIT = 1000
"""Rows per table in one delta; the rest comes with the next exchange."""

Stats = Callable[[], dict[str, Any]]
"""This node's ``{"disk_percent": float, "backpressure": str | None}`` for its answers."""


@dataclass
class PeerView:
    """What this node knows of one peer's knowledge of it (in memory)."""

    manifest_id: str | None = None
    """The peer's manifest id the figures below belong to."""
    cursor: int = 0
    """The peer's relay cursor of this node, as the peer last reported it."""
    echoes: set[int] = field(default_factory=set)
    """Local sequence numbers taken by merging this peer's rows: rows it already has."""
    disk_percent: float | None = None
    """The peer's disk usage, from its last answer."""
    backpressure: str | None = None
    """The peer's backpressure reason from its last answer (None: accepting)."""

    def reported(self, manifest_id: str, cursor: int) -> None:
        """The peer (manifest ``manifest_id``) says it merged us up to ``cursor``."""
        if manifest_id != self.manifest_id:
            self.manifest_id, self.echoes = manifest_id, set()  # a new manifest: holds nothing
        self.cursor = cursor
        self.echoes = {s for s in self.echoes if s > cursor}


class Gossip:
    """One node's side of the protocol, over its manifest."""

    def __init__(self, manifest: ClusterManifest, stats: Stats | None = None,
                 limit: int = PAGE_LIMIT) -> None:
        self.manifest = manifest
        self.stats = stats
        """Disk percent and backpressure to put in answers (None: left out)."""
        self.limit = limit
        """Rows per table in one delta."""
        self.peers: dict[str, PeerView] = {}
        """What each peer last told us of its view of this node."""

    def view(self, peer: str) -> PeerView:
        return self.peers.setdefault(peer, PeerView())

    # -- requester side ---------------------------------------------------------------------
    def request(self, peer: str) -> dict[str, Any]:
        """The digest that opens an exchange with ``peer``."""
        m = self.manifest
        peer_id = m.peer_manifest_id(peer, relay=True)
        req: dict[str, Any] = {"node": m.node, "manifest_id": m.manifest_id, "seq": m.seq,
                               "since": m.peer_cursor(peer, relay=True), "peer_id": peer_id}
        view = self.peers.get(peer)
        if view is not None and peer_id is not None and view.manifest_id == peer_id:
            req["have"] = view.cursor
            if view.cursor < m.seq:
                delta = self.delta_for(peer, view.cursor)
                if not _has_rows(delta) and delta["seq"] > view.cursor:
                    req["quiet_until"] = delta["seq"]
        return req

    def absorb(self, peer: str, request: dict[str, Any], body: Any) -> int:
        """Merge ``peer``'s answer to ``request``; returns the rows it changed here."""
        answer = check_answer(body, peer)
        changed = self._merge(peer, answer)
        view = self.view(peer)
        want = answer.get("want_since")
        view.reported(answer["manifest_id"], request["seq"] if want is None else want)
        view.disk_percent = answer.get("disk_percent")
        view.backpressure = answer.get("backpressure")
        return changed

    def follow_up(self, peer: str, answer: dict[str, Any]) -> dict[str, Any] | None:
        """The delta to send ``peer`` after its answer: None when it wants nothing or there
        are no rows for it (its cursor then moves with the next request's ``quiet_until``)."""
        want = answer.get("want_since")
        if want is None:
            return None
        delta = self.delta_for(peer, int(want))
        return delta if _has_rows(delta) else None

    def acknowledge(self, peer: str, answer: dict[str, Any], body: Any) -> None:
        """``peer`` replied to our follow-up: note its new cursor of us."""
        self.view(peer).reported(answer["manifest_id"], check_reply(body, peer))

    # -- answering side ---------------------------------------------------------------------
    def answer(self, body: Any) -> dict[str, Any]:
        """Answer a request: our delta since its cursor, and what we want of the requester."""
        req = check_request(body)
        m, requester = self.manifest, req["node"]
        if requester == m.node:
            raise ProtocolError(f"{m.node} does not gossip with itself")
        if req["quiet_until"] is not None and req["have"] is not None \
                and req["peer_id"] == m.manifest_id:
            # "nothing for you in (have, quiet_until]": an empty delta over that stretch;
            # merge_peer moves the cursor only if it is at ``have`` or later
            m.merge_peer(requester, {"node": requester, "manifest_id": req["manifest_id"],
                                     "since": req["have"],
                                     "seq": min(req["quiet_until"], req["seq"])}, relay=True)
        since = req["since"] if req["peer_id"] in (None, m.manifest_id) else 0
        out = self.delta_for(requester, min(since, m.seq))
        known = m.peer_manifest_id(requester, relay=True)
        cursor = m.peer_cursor(requester, relay=True)
        if known is not None and known != req["manifest_id"]:
            cursor = 0  # the requester started its numbering over: read it from the start
        out["want_since"] = cursor if req["seq"] > cursor else None
        if self.stats is not None:
            out.update(self.stats())
        return out

    def take_delta(self, body: Any) -> dict[str, Any]:
        """Merge a follow-up delta; the reply tells the sender our new cursor of it."""
        delta = check_delta(body)
        sender = delta["node"]
        if sender == self.manifest.node:
            raise ProtocolError(f"{sender} does not gossip with itself")
        merged = self._merge(sender, delta)
        return {"node": self.manifest.node, "merged": merged,
                "cursor": self.manifest.peer_cursor(sender, relay=True)}

    # -- deltas -----------------------------------------------------------------------------
    def delta_for(self, peer: str, since: int) -> dict[str, Any]:
        """One page of our changes after ``since``, keeping only rows ``peer`` can take."""
        m = self.manifest
        raw = m.changes_since(since, self.limit)
        echoes = self.peers[peer].echoes if peer in self.peers else set()
        keep = {
            "artifacts": lambda r: r["origin"] != peer,
            "replicas": lambda r: r["node"] == m.node,
            "deletions": lambda r: r["node"] == m.node,
        }
        out: dict[str, Any] = {k: raw[k] for k in ("node", "manifest_id", "since", "seq",
                                                    "complete")}
        for table in DELTA_TABLES:
            rows = [r for r in raw[table] if r["seq"] not in echoes and keep[table](r)]
            if rows:
                out[table] = rows
        return out

    def _merge(self, peer: str, delta: dict[str, Any]) -> int:
        """``merge_peer`` with relay; a merge that changed rows is an echo for ``peer``."""
        try:
            changed = self.manifest.merge_peer(peer, delta, relay=True)
        except (KeyError, TypeError) as exc:  # check_delta should have caught it
            raise ProtocolError(f"cannot merge {peer}'s delta: {describe(exc)}") \
                from None
        if changed:
            self.view(peer).echoes.add(self.manifest.seq)
        return changed


def _has_rows(delta: dict[str, Any]) -> bool:
    return any(delta.get(t) for t in DELTA_TABLES)
