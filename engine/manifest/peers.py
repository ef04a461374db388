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

_ARTIFACT_FIELDS = ("config_key", "size", "sha256", "mtime", "source_size", "source_mtime_ns")
_DELETION_FIELDS = ("sha256", "size", "vouched_by", "deleted_at")


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
        ignored. When the answer's ``manifest_id`` differs from the one the cursor belongs
        to, the peer started its numbering over (a wiped data root): the cursor goes back to
        0 so the peer is re-read whole; nothing is dropped (the answer's rows are current
        and are applied).
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
            if answer_id is not None and known_id is not None and answer_id != known_id:
                cursor = 0  # its numbering started over: re-read it from the beginning
            elif upto < cursor:
                self._db.execute("ROLLBACK")
                return 0  # older than what was merged already
            changed = (self._merge_artifacts(peer, changes.get("artifacts", ()), seq, relay)
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
            local = self._db.execute("SELECT * FROM artifacts WHERE data_type=? AND path=?",
                                     (row["data_type"], row["path"])).fetchone()
            if local is not None and local["origin"] != origin:
                continue  # someone else's artifact (or this node's own): never overwritten
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
        self._write_artifact(row, seq)
        return 1

    def _relay_artifact(self, row: Any, local: sqlite3.Row | None,
                        seq: Callable[[], int]) -> int:
        """A row of another origin, second-hand (1: changed). ``local`` is None or has the
        same origin. The origin's own row wins whenever the two ever meet: a relayed row only
        fills in what is unknown or moves a live row to a newer mtime."""
        if row["removed"]:
            if (local is None or local["removed"] or local["sha256"] != row["sha256"]):
                return 0  # a tombstone of another version (or of nothing known) is not ours
            self._remove_artifact(row, seq)
            return 1
        if local is None:
            self._write_artifact(row, seq)
            return 1
        if local["removed"] or row["mtime"] <= local["mtime"]:
            return 0  # never revived second-hand; an older or equal version changes nothing
        self._write_artifact(row, seq)
        return 1

    def _remove_artifact(self, row: Any, seq: Callable[[], int]) -> None:
        self._db.execute("UPDATE artifacts SET removed=1, seq=? WHERE data_type=? AND path=?",
                         (seq(), row["data_type"], row["path"]))

    def _write_artifact(self, row: Any, seq: Callable[[], int]) -> None:
        self._db.execute(
            "INSERT INTO artifacts(data_type, path, config_key, size, sha256, mtime,"
            " origin, source_size, source_mtime_ns, removed, seq)"
            " VALUES (?,?,?,?,?,?,?,?,?,0,?) ON CONFLICT(data_type, path) DO UPDATE SET"
            " config_key=excluded.config_key, size=excluded.size,"
            " sha256=excluded.sha256, mtime=excluded.mtime,"
            " source_size=excluded.source_size, source_mtime_ns=excluded.source_mtime_ns,"
            " removed=0, seq=excluded.seq",
            (row["data_type"], row["path"], row.get("config_key"), row["size"],
             row["sha256"], row["mtime"], row["origin"], row.get("source_size"),
             row.get("source_mtime_ns"), seq()))

    # -- replicas and deletions (first-hand only) -------------------------------------------
    def _merge_replicas(self, peer: str, rows: Any, seq: Callable[[], int]) -> int:
        changed = 0
        for row in rows:
            if row["node"] != peer:
                continue
            local = self._db.execute(
                "SELECT * FROM replicas WHERE data_type=? AND path=? AND node=?",
                (row["data_type"], row["path"], peer)).fetchone()
            removed = 1 if row["removed"] else 0
            if local is None:
                if removed:
                    continue
            elif (local["sha256"], local["verified_at"], local["removed"]) == (
                    row["sha256"], row["verified_at"], removed):
                continue
            elif (local["verified_at"] is not None and row["verified_at"] is not None
                  and local["verified_at"] > row["verified_at"]):
                continue  # the holder's later answer (a receipt) arrived here first
            self._db.execute(
                "INSERT INTO replicas(data_type, path, node, sha256, verified_at, removed, seq)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(data_type, path, node) DO UPDATE SET"
                " sha256=excluded.sha256, verified_at=excluded.verified_at,"
                " removed=excluded.removed, seq=excluded.seq",
                (row["data_type"], row["path"], peer, row["sha256"], row["verified_at"],
                 removed, seq()))
            changed += 1
        return changed

    def _merge_deletions(self, peer: str, rows: Any, replicas: Any,
                         seq: Callable[[], int]) -> int:
        again = {(r["data_type"], r["path"]): r["seq"] for r in replicas
                 if r["node"] == peer and not r["removed"]}
        changed = 0
        for row in rows:
            if row["node"] != peer:
                continue
            key = (row["data_type"], row["path"])
            local = self._db.execute("SELECT * FROM deletions WHERE data_type=? AND path=?"
                                     " AND node=?", (*key, peer)).fetchone()
            if local is not None and all(local[f] == row[f] for f in _DELETION_FIELDS):
                continue
            self._db.execute(
                "INSERT INTO deletions(data_type, path, node, sha256, size, vouched_by, deleted_at,"
                " seq) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(data_type, path, node) DO UPDATE SET"
                " sha256=excluded.sha256, size=excluded.size, vouched_by=excluded.vouched_by,"
                " deleted_at=excluded.deleted_at, seq=excluded.seq",
                (*key, peer, row["sha256"], row["size"], row["vouched_by"], row["deleted_at"],
                 seq()))
            changed += 1
            if again.get(key, -1) > row["seq"]:
                continue  # the peer holds it again since it deleted it
            live = self._db.execute("SELECT 1 FROM replicas WHERE data_type=? AND path=?"
                                    " AND node=? AND removed=0", (*key, peer)).fetchone()
            if live is not None:  # its copy is gone
                self._db.execute("UPDATE replicas SET removed=1, seq=? WHERE data_type=?"
                                 " AND path=? AND node=?", (seq(), *key, peer))
                changed += 1
        return changed
