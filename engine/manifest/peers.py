"""PeerMerge: how a ClusterManifest takes in another node's deltas (``merge_peer``).

A mixin of :class:`engine.manifest.store.ClusterManifest`, kept apart because it is one
concept: which of a peer's rows are believed, in one transaction with one sequence number,
with the peer's cursor beside them.

Two kinds of merge. First-hand (the coordinator's ManifestPuller): a node is believed only
about itself. Relay (gossip, ``relay=True``): artifact rows the peer learned from other nodes
are taken too, so an artifact crosses several hops; replica and deletion rows stay
first-hand, because replicas decide routing (who holds what, who still needs a copy) and a
second-hand "X holds it" could stop the copy X actually lacks. Each kind keeps its own
cursor per peer: a first-hand merge skips rows a relay merge takes, so one cursor shared by
both would lose them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

_ARTIFACT_FIELDS = ("config_key", "size", "mtime", "source_size", "source_mtime_ns",
                    "source_dev", "source_ino", "source_ctime_ns", "superseded")
_DELETION_FIELDS = ("size", "vouched_by", "deleted_at")
_VERSION = "origin=? AND data_type=? AND path=? AND sha256=?"


def _keys(peer: str, relay: bool) -> tuple[str, str]:
    """The meta keys of ``peer``'s cursor and manifest id, per kind of merge."""
    kind = "relay" if relay else "peer"
    return f"{kind}_seq:{peer}", f"{kind}_id:{peer}"


class PeerMerge:
    """``merge_peer``, ``peer_cursor`` and ``peer_manifest_id``, over ClusterManifest's
    connection (``_db``), meta table (``_meta``, ``_set_meta``) and sequence (``_take_seq``)."""

    node: str
    _db: sqlite3.Connection
    _meta: Callable[[str], str | None]
    _set_meta: Callable[[str, str], None]
    _take_seq: Callable[[], int]

    def peer_cursor(self, peer: str, relay: bool = False) -> int:
        """The sequence number of ``peer``'s manifest merged up to (0: nothing yet), by
        first-hand merges or (``relay``) by relay merges."""
        value = self._meta(_keys(peer, relay)[0])
        return int(value) if value is not None else 0

    def peer_manifest_id(self, peer: str, relay: bool = False) -> str | None:
        """The ``manifest_id`` of ``peer`` that ``peer_cursor`` counts in (None: never merged)."""
        return self._meta(_keys(peer, relay)[1])

    def merge_peer(self, peer: str, changes: dict[str, Any], *, relay: bool = False) -> int:
        """Apply one ``changes_since`` answer of node ``peer``; returns how many rows changed.

        Authority: a node is believed only about itself.

        * replicas: a row is taken only when ``row.node == peer`` (the holder's own hashing is
          what "verified" means; rows the peer learned second-hand, e.g. from its receipts,
          are not copied). A tombstone marks the local row removed. A local row whose
          ``verified_at`` is newer than the peer's (both are the holder's clock: a receipt
          carries the holder's answer) is kept; the peer's next delta brings its newer state.
        * artifacts: a row is taken only when ``row.origin == peer``: inserted, or updated,
          but a local row whose origin is another node is never overwritten. A tombstone
          marks the local row removed. With ``relay``, rows of other origins are taken too
          (``_relay_artifact``): inserted when unknown; a live local row of the same origin
          is updated only by a newer mtime; a relayed tombstone removes it only when the
          origin and the sha256 are the same. A removed local row is never revived second-hand.
        * deletions: a row is taken only when ``row.node == peer``; a new or changed one also
          marks the local replica row (artifact, peer) removed, unless the same answer shows
          that replica again after the deletion.
        * capacity, exclusions and receipts are not merged (membership keeps capacity).
        * rows about this manifest's own node are never taken from a peer: ``peer`` is never
          ``self.node``, and a relayed artifact whose origin is this node is skipped.

        Every row changed takes the same, one new local sequence number (one transaction),
        so this manifest's own deltas carry what it learned; an answer that changes nothing
        takes none, so applying an answer twice is a no-op. The peer's cursor (the answer's
        ``seq``) is stored in the same transaction (``peer_cursor``; relay merges keep their
        own) when the answer starts at or before it. An answer older than the cursor is
        ignored. When the answer's ``manifest_id`` (the peer's incarnation) differs from the
        one the cursor belongs to, or an answer asked from the cursor ends before it (the
        peer's manifest went backwards under the same id: restored or rolled back), the peer
        is a new incarnation: the cursor goes back to 0 so it is re-read whole, and every
        replica row it had vouched for here is dropped first (either kind of merge), so a copy
        it no longer has is never counted from memory; the rows it still has come back with
        the re-read.
        """
        if peer == self.node:
            raise ValueError(f"{self.node} does not merge its own manifest")
        if changes.get("node", peer) != peer:
            raise ValueError(f"the answer is from {changes.get('node')!r}, not {peer!r}")
        since, upto = int(changes.get("since", 0)), int(changes["seq"])
        answer_id = changes.get("manifest_id")
        seq_key, id_key = _keys(peer, relay)
        taken: list[int] = []

        def seq() -> int:
            if not taken:
                taken.append(self._take_seq())
            return taken[0]

        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self.peer_cursor(peer, relay)
            known_id = self._meta(id_key)
            restarted = answer_id is not None and known_id is not None and answer_id != known_id
            if not restarted and since >= cursor > upto:
                # asked from the cursor, the peer is behind it under the same id: its
                # manifest went backwards (restored or rolled back) -- a new incarnation
                restarted = True
                changes = {}
            elif not restarted and upto < cursor:
                self._db.execute("ROLLBACK")
                return 0  # older than what was merged already
            forgotten = 0
            if restarted:  # re-read it from the beginning, believing nothing it said before
                cursor = 0
                forgotten = self._forget_replicas(peer, seq)
            changed = forgotten + (
                self._merge_artifacts(peer, changes.get("artifacts", ()), seq, relay)
                       + self._merge_replicas(peer, changes.get("replicas", ()), seq))
            changed += self._merge_deletions(peer, changes.get("deletions", ()),
                                             changes.get("replicas", ()), seq)
            if since <= cursor:
                cursor = upto
            if str(cursor) != self._meta(seq_key):
                self._set_meta(seq_key, str(cursor))
            if answer_id is not None and answer_id != known_id:
                self._set_meta(id_key, str(answer_id))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        return changed

    # -- artifacts --------------------------------------------------------------------------
    def _merge_artifacts(self, peer: str, rows: Any, seq: Callable[[], int],
                         relay: bool) -> int:
        changed = 0
        for row in rows:
            origin = row["origin"]
            if origin == self.node or (origin != peer and not relay):
                continue
            local = self._db.execute(f"SELECT * FROM artifacts WHERE {_VERSION}",
                                     _ident(row)).fetchone()
            take = (self._first_hand_artifact if origin == peer else self._relay_artifact)
            changed += take(row, local, seq)
        return changed

    def _first_hand_artifact(self, row: Any, local: sqlite3.Row | None,
                             seq: Callable[[], int]) -> int:
        """The origin's own row: its state is taken as it is (1: changed)."""
        if row["removed"]:
            if local is None or local["removed"]:
                return 0
            self._remove_artifact(row, seq)
            return 1
        if (local is not None and not local["removed"]
                and all(local[f] == row.get(f) for f in _ARTIFACT_FIELDS)):
            return 0
        self._write_artifact_row(row, seq)
        return 1

    def _relay_artifact(self, row: Any, local: sqlite3.Row | None,
                        seq: Callable[[], int]) -> int:
        """A version of another origin, second-hand (1: changed): filled in when unknown,
        marked superseded when the relayed row says so; a tombstone removes exactly that
        version; a removed local row is never revived second-hand."""
        if row["removed"]:
            if local is None or local["removed"]:
                return 0
            self._remove_artifact(row, seq)
            return 1
        if local is None:
            self._write_artifact_row(row, seq)
            return 1
        if local["removed"] or local["superseded"] or not row.get("superseded"):
            return 0
        self._db.execute(f"UPDATE artifacts SET superseded=1, seq=? WHERE {_VERSION}",
                         (seq(), *_ident(row)))
        return 1

    def _remove_artifact(self, row: Any, seq: Callable[[], int]) -> None:
        self._db.execute(f"UPDATE artifacts SET removed=1, seq=? WHERE {_VERSION}",
                         (seq(), *_ident(row)))

    def _write_artifact_row(self, row: Any, seq: Callable[[], int]) -> None:
        cols = ("origin", "data_type", "path", "sha256", *_ARTIFACT_FIELDS)
        self._db.execute(
            f"INSERT INTO artifacts({', '.join(cols)}, removed, seq)"
            f" VALUES ({', '.join('?' * len(cols))}, 0, ?)"
            " ON CONFLICT(origin, data_type, path, sha256) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in _ARTIFACT_FIELDS)
            + ", removed=0, seq=excluded.seq",
            (*_ident(row), *(_field(row, c) for c in _ARTIFACT_FIELDS), seq()))

    # -- replicas and deletions (first-hand only) -------------------------------------------
    def _forget_replicas(self, peer: str, seq: Callable[[], int]) -> int:
        """Drop every live replica row of ``peer`` (a new incarnation of it is re-read)."""
        live = self._db.execute("SELECT COUNT(*) FROM replicas WHERE node=? AND removed=0",
                                (peer,)).fetchone()[0]
        if live:
            self._db.execute("UPDATE replicas SET removed=1, seq=? WHERE node=? AND removed=0",
                             (seq(), peer))
        return live

    def _merge_replicas(self, peer: str, rows: Any, seq: Callable[[], int]) -> int:
        changed = 0
        for row in rows:
            if row["node"] != peer:
                continue
            local = self._db.execute(f"SELECT * FROM replicas WHERE {_VERSION} AND node=?",
                                     (*_ident(row), peer)).fetchone()
            removed = 1 if row["removed"] else 0
            if local is None:
                if removed:
                    continue
            elif (local["root_id"], local["verified_at"], local["removed"]) == (
                    row.get("root_id"), row["verified_at"], removed):
                continue
            elif (local["verified_at"] is not None and row["verified_at"] is not None
                  and local["verified_at"] > row["verified_at"] and not local["removed"]):
                continue  # the holder's later answer (a receipt) arrived here first
            self._db.execute(
                "INSERT INTO replicas(origin, data_type, path, sha256, node, root_id,"
                " verified_at, removed, seq) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(origin, data_type, path, sha256, node) DO UPDATE SET"
                " root_id=excluded.root_id, verified_at=excluded.verified_at,"
                " removed=excluded.removed, seq=excluded.seq",
                (*_ident(row), peer, row.get("root_id"), row["verified_at"], removed, seq()))
            changed += 1
        return changed

    def _merge_deletions(self, peer: str, rows: Any, replicas: Any,
                         seq: Callable[[], int]) -> int:
        again = {_ident(r): r["seq"] for r in replicas
                 if r["node"] == peer and not r["removed"]}
        changed = 0
        for row in rows:
            if row["origin"] != peer:
                continue
            key = _ident(row)
            local = self._db.execute(f"SELECT * FROM deletions WHERE {_VERSION}", key).fetchone()
            if local is not None and all(local[f] == row[f] for f in _DELETION_FIELDS):
                continue
            self._db.execute(
                "INSERT INTO deletions(origin, data_type, path, sha256, size, vouched_by,"
                " deleted_at, seq) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(origin, data_type, path, sha256) DO UPDATE SET"
                " size=excluded.size, vouched_by=excluded.vouched_by,"
                " deleted_at=excluded.deleted_at, seq=excluded.seq",
                (*key, row["size"], row["vouched_by"], row["deleted_at"], seq()))
            changed += 1
            if again.get(key, -1) > row["seq"]:
                continue  # the peer holds it again since it deleted it
            live = self._db.execute(f"SELECT 1 FROM replicas WHERE {_VERSION} AND node=?"
                                    " AND removed=0", (*key, peer)).fetchone()
            if live is not None:  # its copy is gone
                self._db.execute(f"UPDATE replicas SET removed=1, seq=? WHERE {_VERSION}"
                                 " AND node=?", (seq(), *key, peer))
                changed += 1
        return changed


def _ident(row: Any) -> tuple[str, str, str, str]:
    return (row["origin"], row["data_type"], row["path"], row["sha256"])


def _field(row: Any, name: str) -> Any:
    if name == "superseded":
        return 1 if row.get("superseded") else 0
    return row.get(name)
