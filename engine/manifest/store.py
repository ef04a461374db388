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
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.manifest.peers import PeerMerge

_SCHEMA = (Path(__file__).with_name("schema.sql")).read_text()
TABLES = ("artifacts", "replicas", "receipts", "capacity", "exclusions", "deletions")
"""The tables whose rows travel as deltas (``changes_since``)."""


Ident = tuple[str, str, str, str]
"""An artifact version: (origin, data_type, path, sha256)."""


@dataclass(frozen=True)
class Artifact:
    """One version of one node's file: (origin, data_type, path, sha256) cannot collide."""

    data_type: str
    path: str
    config_key: str | None
    size: int
    sha256: str
    mtime: float
    origin: str
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_dev: int | None = None
    source_ino: int | None = None
    source_ctime_ns: int | None = None
    superseded: bool = False
    """The origin has registered a newer version of the same file since."""

    @property
    def key(self) -> str:
        """``<data_type>/<path>``: how events name an artifact (the origin is beside it)."""
        return f"{self.data_type}/{self.path}"

    @property
    def ident(self) -> Ident:
        """(origin, data_type, path, sha256): this version, wherever it is stored."""
        return (self.origin, self.data_type, self.path, self.sha256)

    @property
    def label(self) -> str:
        """``origin:data_type/path@sha12`` for logs."""
        return f"{self.origin}:{self.key}@{self.sha256[:12]}"

    @property
    def source_identity(self) -> tuple[int | None, ...]:
        """(st_dev, st_ino, size, mtime_ns, ctime_ns) of the source when it was hashed."""
        return (self.source_dev, self.source_ino, self.source_size, self.source_mtime_ns,
                self.source_ctime_ns)


def stat_identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The identity of a file on disk that ``utime`` cannot forge (ctime included)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Replica:
    """A holder's copy of one artifact version."""

    data_type: str
    path: str
    node: str
    sha256: str
    verified_at: float | None
    origin: str = field(kw_only=True)
    root_id: str | None = field(default=None, kw_only=True)
    """The holder's data root id, as the holder reported it."""

    @property
    def ident(self) -> Ident:
        return (self.origin, self.data_type, self.path, self.sha256)


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
    origin: str = field(kw_only=True)
    root_id: str | None = field(default=None, kw_only=True)


class ManifestSchemaError(RuntimeError):
    """A manifest written by an older ringsync that identified artifacts without origin."""


_ART_COLS = ("origin", "data_type", "path", "sha256", "config_key", "size", "mtime",
             "source_size", "source_mtime_ns", "source_dev", "source_ino", "source_ctime_ns")
_VERSION = "origin=? AND data_type=? AND path=? AND sha256=?"


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
        cols = {r["name"] for r in self._db.execute("PRAGMA table_info(artifacts)")}
        if cols and "source_ino" not in cols:
            self._db.close()
            raise ManifestSchemaError(
                f"{db_path} was written by an older ringsync that identified artifacts by path"
                " alone; move the data root's received copies and this file aside and restart")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('manifest_id', ?)",
                         (secrets.token_hex(16),))

    @property
    def manifest_id(self) -> str:
        """This manifest's incarnation: a random id made when it was created and again at
        every start (``new_incarnation``). A peer that sees it change re-reads this manifest
        from 0 and forgets what it had believed of it, so a manifest restored from a backup
        or rolled back can never leave a peer counting rows it no longer has."""
        return str(self._meta("manifest_id"))

    def new_incarnation(self) -> str:
        """Take a new incarnation id (at start, before any peer reads this manifest)."""
        value = secrets.token_hex(16)
        self._set_meta("manifest_id", value)
        return value

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
    def _change(self, durable: bool = False) -> Iterator[int]:
        """One transaction that takes the next sequence number; ``durable`` commits it with
        ``synchronous=FULL`` (on disk when this returns, power loss included)."""
        if durable:
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._take_seq()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    # -- artifacts --------------------------------------------------------------------------
    def upsert_artifact(self, art: Artifact) -> bool:
        """Record a version as its origin's current one (older versions of the same file
        become superseded); returns False (no sequence number) when nothing changed."""
        old = self._db.execute(f"SELECT * FROM artifacts WHERE {_VERSION}", art.ident).fetchone()
        others = self._db.execute(
            "SELECT 1 FROM artifacts WHERE origin=? AND data_type=? AND path=? AND sha256!=?"
            " AND superseded=0 AND removed=0", art.ident).fetchone()
        if (old is not None and not old["removed"] and _artifact(old) == art
                and others is None):
            return False
        with self._change() as seq:
            self._write_artifact(art, seq)
            self._db.execute(
                "UPDATE artifacts SET superseded=1, seq=? WHERE origin=? AND data_type=?"
                " AND path=? AND sha256!=? AND superseded=0", (seq, *art.ident))
        return True

    def _write_artifact(self, art: Artifact, seq: int, keep_source: bool = False) -> None:
        values = tuple(getattr(art, c) for c in _ART_COLS)
        update = ("config_key=COALESCE(excluded.config_key, config_key), removed=0, seq=excluded.seq"
                  if keep_source else
                  ", ".join(f"{c}=excluded.{c}" for c in _ART_COLS[4:])
                  + ", superseded=excluded.superseded, removed=0, seq=excluded.seq")
        self._db.execute(
            f"INSERT INTO artifacts({', '.join(_ART_COLS)}, superseded, removed, seq)"
            f" VALUES ({', '.join('?' * len(_ART_COLS))}, ?, 0, ?)"
            f" ON CONFLICT(origin, data_type, path, sha256) DO UPDATE SET {update}",
            (*values, int(art.superseded), seq))

    def get_artifact(self, data_type: str, path: str, origin: str | None = None,
                     sha256: str | None = None) -> Artifact | None:
        """The version ``sha256`` of ``origin``'s file, or its current version. Without an
        origin: this node's own file, else the newest current one of that name (a display
        lookup; nothing that decides on copies may use it)."""
        if origin is not None and sha256 is not None:
            row = self._db.execute(f"SELECT * FROM artifacts WHERE {_VERSION} AND removed=0",
                                   (origin, data_type, path, sha256)).fetchone()
            return _artifact(row) if row else None
        sql = ("SELECT * FROM artifacts WHERE data_type=? AND path=? AND removed=0"
               " AND superseded=0")
        args: list[Any] = [data_type, path]
        if origin is not None:
            sql, args = sql + " AND origin=?", [*args, origin]
        row = self._db.execute(sql + " ORDER BY origin != ?, mtime DESC LIMIT 1",
                               (*args, self.node)).fetchone()
        return _artifact(row) if row else None

    def artifacts(self, data_type: str | None = None, origin: str | None = None,
                  versions: bool = False) -> list[Artifact]:
        """Live artifacts, oldest first: current versions, or with ``versions`` every one."""
        sql, args = "SELECT * FROM artifacts WHERE removed=0", []
        if not versions:
            sql += " AND superseded=0"
        if data_type:
            sql, args = sql + " AND data_type=?", [*args, data_type]
        if origin:
            sql, args = sql + " AND origin=?", [*args, origin]
        return [_artifact(r) for r in self._db.execute(sql + " ORDER BY mtime", args)]

    def remove_artifact(self, art: Artifact) -> None:
        with self._change() as seq:
            self._db.execute(f"UPDATE artifacts SET removed=1, seq=? WHERE {_VERSION}",
                             (seq, *art.ident))

    def counts_by_type(self) -> dict[str, int]:
        rows = self._db.execute("SELECT data_type, COUNT(*) n FROM artifacts WHERE removed=0"
                                " AND superseded=0 GROUP BY data_type")
        return {r["data_type"]: r["n"] for r in rows}

    # -- replicas ---------------------------------------------------------------------------
    def set_replica(self, rep: Replica) -> None:
        with self._change() as seq:
            self._set_replica(rep, seq)

    def _set_replica(self, rep: Replica, seq: int) -> None:
        self._db.execute(
            "INSERT INTO replicas(origin, data_type, path, sha256, node, root_id, verified_at,"
            " removed, seq) VALUES (?,?,?,?,?,?,?,0,?)"
            " ON CONFLICT(origin, data_type, path, sha256, node) DO UPDATE SET"
            " root_id=COALESCE(excluded.root_id, root_id), verified_at=excluded.verified_at,"
            " removed=0, seq=excluded.seq",
            (*rep.ident, rep.node, rep.root_id, rep.verified_at, seq))

    def remove_replica(self, ident: Ident, node: str) -> bool:
        """Stop counting ``node``'s copy of version ``ident``; False when it was not counted."""
        live = self._db.execute(f"SELECT 1 FROM replicas WHERE {_VERSION} AND node=?"
                                " AND removed=0", (*ident, node)).fetchone()
        if live is None:
            return False
        with self._change() as seq:
            self._db.execute(f"UPDATE replicas SET removed=1, seq=? WHERE {_VERSION} AND node=?",
                             (seq, *ident, node))
        return True

    def replicas(self, art: Artifact | Ident) -> list[Replica]:
        """Live replica rows of exactly this version."""
        ident = art.ident if isinstance(art, Artifact) else art
        rows = self._db.execute(f"SELECT * FROM replicas WHERE {_VERSION} AND removed=0", ident)
        return [_replica(r) for r in rows]

    def verified_holders(self, art: Artifact) -> set[str]:
        """Nodes whose replica of this version was verified (memory only: good for routing,
        never enough to delete a source)."""
        return {r.node for r in self.replicas(art) if r.verified_at is not None}

    def verified_holders_by_artifact(self, origin: str,
                                     versions: bool = False) -> dict[Ident, set[str]]:
        """``verified_holders`` for every (current, or every) version of ``origin``'s files."""
        rows = self._db.execute(
            "SELECT a.origin, a.data_type, a.path, a.sha256, r.node FROM artifacts a JOIN"
            " replicas r ON r.origin = a.origin AND r.data_type = a.data_type"
            " AND r.path = a.path AND r.sha256 = a.sha256"
            " WHERE a.origin = ? AND a.removed = 0 AND r.removed = 0"
            " AND r.verified_at IS NOT NULL" + ("" if versions else " AND a.superseded = 0"),
            (origin,))
        holders: dict[Ident, set[str]] = {}
        for row in rows:
            key = (row["origin"], row["data_type"], row["path"], row["sha256"])
            holders.setdefault(key, set()).add(row["node"])
        return holders

    def held_by(self, node: str) -> list[tuple[Artifact, Replica]]:
        """Every live artifact version ``node`` has a replica row of, with that row."""
        rows = self._db.execute(
            "SELECT a.*, r.node AS r_node, r.root_id AS r_root_id,"
            " r.verified_at AS r_verified_at FROM replicas r JOIN artifacts a"
            " ON a.origin = r.origin AND a.data_type = r.data_type AND a.path = r.path"
            " AND a.sha256 = r.sha256 WHERE r.node = ? AND r.removed = 0 AND a.removed = 0"
            " ORDER BY a.origin, a.data_type, a.path", (node,))
        return [(_artifact(r), Replica(r["data_type"], r["path"], r["r_node"], r["sha256"],
                                       r["r_verified_at"], origin=r["origin"],
                                       root_id=r["r_root_id"])) for r in rows]

    def copies_named(self, node: str, data_type: str, path: str) -> list[Replica]:
        """``node``'s live replica rows of any version of any origin's ``data_type/path``,
        newest verification first (for a hook, which events name by path)."""
        rows = self._db.execute("SELECT * FROM replicas WHERE node=? AND data_type=? AND path=?"
                                " AND removed=0 ORDER BY verified_at DESC",
                                (node, data_type, path))
        return [_replica(r) for r in rows]

    def newest_artifacts(self, limit: int) -> tuple[int, list[tuple[Artifact, list[Replica]]]]:
        """How many current artifacts there are, and the newest ``limit`` of them (by mtime)
        with their live replicas, in one query."""
        rows = self._db.execute(
            "WITH top AS (SELECT * FROM artifacts WHERE removed = 0 AND superseded = 0"
            "             ORDER BY mtime DESC, origin, data_type, path LIMIT ?)"
            " SELECT top.*, r.node AS r_node, r.root_id AS r_root_id,"
            " r.verified_at AS r_verified_at,"
            " (SELECT COUNT(*) FROM artifacts WHERE removed = 0 AND superseded = 0) AS total"
            " FROM top LEFT JOIN replicas r ON r.origin = top.origin"
            " AND r.data_type = top.data_type AND r.path = top.path AND r.sha256 = top.sha256"
            " AND r.removed = 0"
            " ORDER BY top.mtime DESC, top.origin, top.data_type, top.path, r.node",
            (limit,)).fetchall()
        total = rows[0]["total"] if rows else 0
        out: dict[Ident, tuple[Artifact, list[Replica]]] = {}
        for r in rows:
            art = _artifact(r)
            entry = out.setdefault(art.ident, (art, []))
            if r["r_node"] is not None:
                entry[1].append(Replica(r["data_type"], r["path"], r["r_node"], r["sha256"],
                                        r["r_verified_at"], origin=r["origin"],
                                        root_id=r["r_root_id"]))
        return total, list(out.values())

    # -- receipts ---------------------------------------------------------------------------
    def register_sync(self, receipt: SyncReceipt, artifact: Artifact | None = None) -> int:
        """Record a verified arrival: the receipt, the target's replica and (if given) the
        artifact version (known here from the sender: never this node's own source identity).

        ``receipt.verified_at`` must come from the node that hashed the stored bytes.
        """
        return self.register_syncs([(receipt, artifact)])

    def register_syncs(self, arrivals: list[tuple[SyncReceipt, Artifact | None]]) -> int:
        """``register_sync`` for many arrivals in one transaction (a batch of staged files:
        one commit, not one each); returns its sequence number."""
        with self._change() as seq:
            for receipt, artifact in arrivals:
                if artifact is not None:
                    known = self._db.execute(f"SELECT 1 FROM artifacts WHERE {_VERSION}",
                                             artifact.ident).fetchone()
                    self._write_artifact(artifact, seq, keep_source=known is not None)
                self._db.execute(
                    "INSERT INTO receipts(origin, data_type, path, source_node, target_node,"
                    " sha256, size, verified_at, transport, root_id, seq)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (receipt.origin, receipt.data_type, receipt.path, receipt.source_node,
                     receipt.target_node, receipt.sha256, receipt.size, receipt.verified_at,
                     receipt.transport, receipt.root_id, seq))
                self._set_replica(Replica(receipt.data_type, receipt.path, receipt.target_node,
                                          receipt.sha256, receipt.verified_at,
                                          origin=receipt.origin, root_id=receipt.root_id), seq)
        return seq

    def receipts(self, limit: int = 100) -> list[SyncReceipt]:
        rows = self._db.execute("SELECT * FROM receipts ORDER BY id DESC LIMIT ?", (limit,))
        return [SyncReceipt(**{k: r[k] for k in SyncReceipt.__dataclass_fields__}) for r in rows]

    # -- deletions --------------------------------------------------------------------------
    def record_deletion(self, art: Artifact, vouched_by: list[str],
                        deleted_at: float | None = None) -> int:
        """This node deleted its source of version ``art`` after ``vouched_by`` vouched for
        it live: log it durably (``synchronous=FULL``) and drop its own replica row."""
        with self._change(durable=True) as seq:
            self._db.execute(
                "INSERT INTO deletions(origin, data_type, path, sha256, size, vouched_by,"
                " deleted_at, seq) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(origin, data_type, path, sha256) DO UPDATE SET"
                " size=excluded.size, vouched_by=excluded.vouched_by,"
                " deleted_at=excluded.deleted_at, seq=excluded.seq",
                (*art.ident, art.size, json.dumps(sorted(vouched_by)),
                 deleted_at or time.time(), seq))
            self._db.execute(f"UPDATE replicas SET removed=1, seq=? WHERE {_VERSION}"
                             " AND node=? AND removed=0", (seq, *art.ident, art.origin))
        return seq

    def deleted_sources(self, origin: str) -> set[Ident]:
        """Every version ``origin`` deleted its source of."""
        rows = self._db.execute("SELECT origin, data_type, path, sha256 FROM deletions"
                                " WHERE origin=?", (origin,))
        return {(r["origin"], r["data_type"], r["path"], r["sha256"]) for r in rows}

    def deletions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deletions, with ``vouched_by`` as a list."""
        rows = self._db.execute("SELECT * FROM deletions ORDER BY seq DESC LIMIT ?", (limit,))
        return [{**dict(r), "node": r["origin"], "vouched_by": json.loads(r["vouched_by"])}
                for r in rows]

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
                    row["mtime"], row["origin"], row["source_size"], row["source_mtime_ns"],
                    row["source_dev"], row["source_ino"], row["source_ctime_ns"],
                    bool(row["superseded"]))


def _replica(row: sqlite3.Row) -> Replica:
    return Replica(row["data_type"], row["path"], row["node"], row["sha256"], row["verified_at"],
                   origin=row["origin"], root_id=row["root_id"])


def as_dict(obj: Artifact | Replica | SyncReceipt) -> dict[str, Any]:
    return asdict(obj)
