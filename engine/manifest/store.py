"""ClusterManifest on SQLite in WAL mode.

Every mutation takes the node's next sequence number and stamps it on the rows it
touched; ``changes_since(seq)`` returns exactly those rows, so peers exchange
deltas. Removals are tombstones (``removed = 1``) so they travel as deltas too. A peer's
deltas are applied with ``merge_peer`` (``engine/manifest/peers.py``: a node is believed only
about its own rows), which keeps the peer's cursor beside them. All calls run on the event
loop's thread; each is one short transaction.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.manifest.peers import PeerMerge

_SCHEMA = (Path(__file__).with_name("schema.sql")).read_text()
TABLES = ("artifacts", "replicas", "receipts", "capacity", "exclusions", "deletions")
"""The tables whose rows travel as deltas (``changes_since``)."""


@dataclass(frozen=True)
class Artifact:
    data_type: str
    path: str
    config_key: str | None
    size: int
    sha256: str
    mtime: float
    origin: str
    source_size: int | None = None
    source_mtime_ns: int | None = None

    @property
    def key(self) -> str:
        """``<data_type>/<path>``: how events and logs name an artifact."""
        return f"{self.data_type}/{self.path}"


@dataclass(frozen=True)
class Replica:
    data_type: str
    path: str
    node: str
    sha256: str
    verified_at: float | None


@dataclass(frozen=True)
class SyncReceipt:
    data_type: str
    path: str
    source_node: str
    target_node: str
    sha256: str
    size: int
    verified_at: float
    transport: str


class ClusterManifest(PeerMerge):
    """One node's view of the cluster's artifacts, replicas, receipts and capacity."""

    def __init__(self, db_path: Path | str, node: str) -> None:
        self.node = node
        """The node this manifest belongs to."""
        self.db_path = Path(db_path)
        self._db = sqlite3.connect(str(db_path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('manifest_id', ?)",
                         (secrets.token_hex(16),))

    @property
    def manifest_id(self) -> str:
        """A random id made when this manifest was created: a peer that sees it change knows
        the sequence numbers started over (a wiped data root) and re-reads from 0."""
        return str(self._meta("manifest_id"))

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?)"
                         " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        self._db.close()

    # -- sequence ---------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """The newest sequence number handed out."""
        value = self._meta("seq")
        return int(value) if value is not None else 0

    def _take_seq(self) -> int:
        """Hand out the next sequence number (inside a transaction)."""
        seq = self.seq + 1
        self._set_meta("seq", str(seq))
        return seq

    @contextmanager
    def _change(self) -> Iterator[int]:
        """One transaction that takes the next sequence number."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._take_seq()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # -- artifacts --------------------------------------------------------------------------
    def upsert_artifact(self, art: Artifact) -> bool:
        """Record an artifact; returns False (and takes no sequence number) when nothing changed."""
        old = self.get_artifact(art.data_type, art.path)
        if old == art and not self._is_removed("artifacts", art.data_type, art.path):
            return False
        with self._change() as seq:
            self._db.execute(
                "INSERT INTO artifacts(data_type, path, config_key, size, sha256, mtime, origin,"
                " source_size, source_mtime_ns, removed, seq) VALUES (?,?,?,?,?,?,?,?,?,0,?)"
                " ON CONFLICT(data_type, path) DO UPDATE SET config_key=excluded.config_key,"
                " size=excluded.size, sha256=excluded.sha256, mtime=excluded.mtime,"
                " origin=excluded.origin, source_size=excluded.source_size,"
                " source_mtime_ns=excluded.source_mtime_ns, removed=0, seq=excluded.seq",
                (art.data_type, art.path, art.config_key, art.size, art.sha256, art.mtime,
                 art.origin, art.source_size, art.source_mtime_ns, seq))
        return True

    def _is_removed(self, table: str, data_type: str, path: str) -> bool:
        row = self._db.execute(f"SELECT removed FROM {table} WHERE data_type=? AND path=?",
                               (data_type, path)).fetchone()
        return bool(row and row["removed"])

    def get_artifact(self, data_type: str, path: str) -> Artifact | None:
        row = self._db.execute("SELECT * FROM artifacts WHERE data_type=? AND path=? AND removed=0",
                               (data_type, path)).fetchone()
        return _artifact(row) if row else None

    def artifacts(self, data_type: str | None = None, origin: str | None = None) -> list[Artifact]:
        sql, args = "SELECT * FROM artifacts WHERE removed=0", []
        if data_type:
            sql, args = sql + " AND data_type=?", [*args, data_type]
        if origin:
            sql, args = sql + " AND origin=?", [*args, origin]
        return [_artifact(r) for r in self._db.execute(sql + " ORDER BY mtime", args)]

    def remove_artifact(self, data_type: str, path: str) -> None:
        with self._change() as seq:
            self._db.execute("UPDATE artifacts SET removed=1, seq=? WHERE data_type=? AND path=?",
                             (seq, data_type, path))

    def counts_by_type(self) -> dict[str, int]:
        rows = self._db.execute("SELECT data_type, COUNT(*) n FROM artifacts WHERE removed=0"
                                " GROUP BY data_type")
        return {r["data_type"]: r["n"] for r in rows}

    # -- replicas ---------------------------------------------------------------------------
    def set_replica(self, rep: Replica) -> None:
        with self._change() as seq:
            self._set_replica(rep, seq)

    def _set_replica(self, rep: Replica, seq: int) -> None:
        self._db.execute(
            "INSERT INTO replicas(data_type, path, node, sha256, verified_at, removed, seq)"
            " VALUES (?,?,?,?,?,0,?) ON CONFLICT(data_type, path, node) DO UPDATE SET"
            " sha256=excluded.sha256, verified_at=excluded.verified_at, removed=0, seq=excluded.seq",
            (rep.data_type, rep.path, rep.node, rep.sha256, rep.verified_at, seq))

    def remove_replica(self, data_type: str, path: str, node: str) -> None:
        with self._change() as seq:
            self._db.execute("UPDATE replicas SET removed=1, seq=? WHERE data_type=? AND path=?"
                             " AND node=?", (seq, data_type, path, node))

    def replicas(self, data_type: str, path: str) -> list[Replica]:
        rows = self._db.execute("SELECT * FROM replicas WHERE data_type=? AND path=? AND removed=0",
                                (data_type, path))
        return [_replica(r) for r in rows]

    def verified_holders(self, art: Artifact) -> set[str]:
        """Nodes whose replica of ``art`` was verified against its current hash (memory only:
        good for routing, never enough to delete a source)."""
        return {r.node for r in self.replicas(art.data_type, art.path)
                if r.sha256 == art.sha256 and r.verified_at is not None}

    def verified_holders_by_artifact(self, origin: str) -> dict[tuple[str, str], set[str]]:
        """``verified_holders`` for every artifact of ``origin``, in one query."""
        rows = self._db.execute(
            "SELECT a.data_type, a.path, r.node FROM artifacts a JOIN replicas r"
            " ON r.data_type = a.data_type AND r.path = a.path AND r.sha256 = a.sha256"
            " WHERE a.origin = ? AND a.removed = 0 AND r.removed = 0"
            " AND r.verified_at IS NOT NULL", (origin,))
        holders: dict[tuple[str, str], set[str]] = {}
        for row in rows:
            holders.setdefault((row["data_type"], row["path"]), set()).add(row["node"])
        return holders

    def held_by(self, node: str) -> list[tuple[Artifact, Replica]]:
        """Every live artifact ``node`` has a replica row of, with that row (one query)."""
        rows = self._db.execute(
            "SELECT a.*, r.node AS r_node, r.sha256 AS r_sha256, r.verified_at AS r_verified_at"
            " FROM replicas r JOIN artifacts a ON a.data_type = r.data_type AND a.path = r.path"
            " WHERE r.node = ? AND r.removed = 0 AND a.removed = 0"
            " ORDER BY a.data_type, a.path", (node,))
        return [(_artifact(r), Replica(r["data_type"], r["path"], r["r_node"], r["r_sha256"],
                                       r["r_verified_at"])) for r in rows]

    def newest_artifacts(self, limit: int) -> tuple[int, list[tuple[Artifact, list[Replica]]]]:
        """How many live artifacts there are, and the newest ``limit`` of them (by mtime) with
        their live replicas, in one query."""
        rows = self._db.execute(
            "WITH top AS (SELECT * FROM artifacts WHERE removed = 0"
            "             ORDER BY mtime DESC, data_type, path LIMIT ?)"
            " SELECT top.*, r.node AS r_node, r.sha256 AS r_sha256,"
            " r.verified_at AS r_verified_at,"
            " (SELECT COUNT(*) FROM artifacts WHERE removed = 0) AS total"
            " FROM top LEFT JOIN replicas r ON r.data_type = top.data_type"
            " AND r.path = top.path AND r.removed = 0"
            " ORDER BY top.mtime DESC, top.data_type, top.path, r.node", (limit,)).fetchall()
        total = rows[0]["total"] if rows else 0
        out: dict[tuple[str, str], tuple[Artifact, list[Replica]]] = {}
        for r in rows:
            entry = out.setdefault((r["data_type"], r["path"]), (_artifact(r), []))
            if r["r_node"] is not None:
                entry[1].append(Replica(r["data_type"], r["path"], r["r_node"], r["r_sha256"],
                                        r["r_verified_at"]))
        return total, list(out.values())

    # -- receipts ---------------------------------------------------------------------------
    def register_sync(self, receipt: SyncReceipt, artifact: Artifact | None = None) -> int:
        """Record a verified arrival: the receipt, the target's replica and (if given) the artifact.

        ``receipt.verified_at`` must come from the node that hashed the stored bytes.
        """
        with self._change() as seq:
            if artifact is not None:
                self._db.execute(
                    "INSERT INTO artifacts(data_type, path, config_key, size, sha256, mtime, origin,"
                    " removed, seq) VALUES (?,?,?,?,?,?,?,0,?) ON CONFLICT(data_type, path) DO"
                    " UPDATE SET size=excluded.size, sha256=excluded.sha256, removed=0,"
                    " config_key=COALESCE(excluded.config_key, config_key), seq=excluded.seq",
                    (artifact.data_type, artifact.path, artifact.config_key, artifact.size,
                     artifact.sha256, artifact.mtime, artifact.origin, seq))
            self._db.execute(
                "INSERT INTO receipts(data_type, path, source_node, target_node, sha256, size,"
                " verified_at, transport, seq) VALUES (?,?,?,?,?,?,?,?,?)",
                (receipt.data_type, receipt.path, receipt.source_node, receipt.target_node,
                 receipt.sha256, receipt.size, receipt.verified_at, receipt.transport, seq))
            self._set_replica(Replica(receipt.data_type, receipt.path, receipt.target_node,
                                      receipt.sha256, receipt.verified_at), seq)
        return seq

    def receipts(self, limit: int = 100) -> list[SyncReceipt]:
        rows = self._db.execute("SELECT * FROM receipts ORDER BY id DESC LIMIT ?", (limit,))
        return [SyncReceipt(**{k: r[k] for k in SyncReceipt.__dataclass_fields__}) for r in rows]

    # -- deletions --------------------------------------------------------------------------
    def record_deletion(self, art: Artifact, node: str, vouched_by: list[str]) -> int:
        """``node`` deleted its source of ``art`` after ``vouched_by`` vouched for it live: log
        it and drop ``node``'s own replica row (its copy is gone); the artifact stays known."""
        with self._change() as seq:
            self._db.execute(
                "INSERT INTO deletions(data_type, path, node, sha256, size, vouched_by, deleted_at,"
                " seq) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(data_type, path, node) DO UPDATE SET"
                " sha256=excluded.sha256, size=excluded.size, vouched_by=excluded.vouched_by,"
                " deleted_at=excluded.deleted_at, seq=excluded.seq",
                (art.data_type, art.path, node, art.sha256, art.size,
                 json.dumps(sorted(vouched_by)), time.time(), seq))
            self._db.execute("UPDATE replicas SET removed=1, seq=? WHERE data_type=? AND path=?"
                             " AND node=? AND removed=0", (seq, art.data_type, art.path, node))
        return seq

    def deleted_sources(self, node: str) -> set[tuple[str, str]]:
        """(data_type, path) of every artifact ``node`` deleted its source of."""
        rows = self._db.execute("SELECT data_type, path FROM deletions WHERE node=?", (node,))
        return {(r["data_type"], r["path"]) for r in rows}

    def deletions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deletions, with ``vouched_by`` as a list."""
        rows = self._db.execute("SELECT * FROM deletions ORDER BY seq DESC LIMIT ?", (limit,))
        return [{**dict(r), "vouched_by": json.loads(r["vouched_by"])} for r in rows]

    # -- capacity and exclusions ------------------------------------------------------------
    def set_capacity(self, node: str, used_bytes: int, total_bytes: int) -> None:
        """Record ``node``'s usage; an unchanged figure takes no sequence number (a quiet
        cluster's manifests stay quiet)."""
        row = self._db.execute("SELECT used_bytes, total_bytes FROM capacity WHERE node=?",
                               (node,)).fetchone()
        if row is not None and (row["used_bytes"], row["total_bytes"]) == (used_bytes, total_bytes):
            self._db.execute("UPDATE capacity SET updated_at=? WHERE node=?", (time.time(), node))
            return
        with self._change() as seq:
            self._db.execute(
                "INSERT INTO capacity(node, used_bytes, total_bytes, updated_at, seq) VALUES"
                " (?,?,?,?,?) ON CONFLICT(node) DO UPDATE SET used_bytes=excluded.used_bytes,"
                " total_bytes=excluded.total_bytes, updated_at=excluded.updated_at, seq=excluded.seq",
                (node, used_bytes, total_bytes, time.time(), seq))

    def capacity(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM capacity")
        return {r["node"]: {"used_bytes": r["used_bytes"], "total_bytes": r["total_bytes"],
                            "updated_at": r["updated_at"]} for r in rows}

    def add_exclusion(self, node: str, pattern: str, reason: str) -> None:
        with self._change() as seq:
            self._db.execute(
                "INSERT INTO exclusions(node, pattern, reason, removed, seq) VALUES (?,?,?,0,?)"
                " ON CONFLICT(node, pattern) DO UPDATE SET reason=excluded.reason, removed=0,"
                " seq=excluded.seq", (node, pattern, reason, seq))

    def exclusions(self) -> list[tuple[str, str, str]]:
        rows = self._db.execute("SELECT node, pattern, reason FROM exclusions WHERE removed=0")
        return [(r["node"], r["pattern"], r["reason"]) for r in rows]

    # -- deltas -----------------------------------------------------------------------------
    def changes_since(self, since: int, limit: int = 5000) -> dict[str, Any]:
        """Every row changed after ``since`` (tombstones included), at most ``limit`` per table.

        ``seq`` in the answer is where the caller should continue from: the manifest's
        sequence when complete, or the last sequence fully included when truncated.
        One change (one sequence number) is never split: when a single change alone has more
        than ``limit`` rows in a table (``merge_peer`` can), that change is sent whole, so a
        caller paging with any limit always makes progress. ``manifest_id`` tells the caller
        whether the numbering it continues is still this one.
        """
        out: dict[str, Any] = {"node": self.node, "manifest_id": self.manifest_id,
                               "since": since}
        newest = upto = self.seq
        rows: dict[str, list[sqlite3.Row]] = {}
        for table in TABLES:
            rows[table] = self._db.execute(
                f"SELECT * FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",
                (since, limit + 1)).fetchall()
            if len(rows[table]) > limit:
                upto = min(upto, rows[table][limit]["seq"] - 1)
        if upto <= since < newest:  # the first change alone is over the limit: send it whole
            upto = min(r[0]["seq"] for r in rows.values() if r)
            for table in TABLES:
                rows[table] = self._db.execute(
                    f"SELECT * FROM {table} WHERE seq > ? AND seq <= ? ORDER BY seq",
                    (since, upto)).fetchall()
        for table in TABLES:
            out[table] = [dict(r) for r in rows[table] if r["seq"] <= upto]
        out["seq"] = upto
        out["complete"] = upto == newest
        return out

def _artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(row["data_type"], row["path"], row["config_key"], row["size"], row["sha256"],
                    row["mtime"], row["origin"], row["source_size"], row["source_mtime_ns"])


def _replica(row: sqlite3.Row) -> Replica:
    return Replica(row["data_type"], row["path"], row["node"], row["sha256"], row["verified_at"])


def as_dict(obj: Artifact | Replica | SyncReceipt) -> dict[str, Any]:
    return asdict(obj)
