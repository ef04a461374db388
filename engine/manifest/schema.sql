-- ClusterManifest schema. Every row carries `seq`: the node's sequence number at
-- its last change, so peers ask for `seq > N` and get only what changed.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- An artifact version is (origin, data_type, path, sha256): two nodes' files with one path
-- are two artifacts, and a source whose bytes change is a new version (the old one stays,
-- superseded, as long as copies of it exist).
CREATE TABLE IF NOT EXISTS artifacts (
    origin      TEXT NOT NULL,          -- node that produced it
    data_type   TEXT NOT NULL,
    path        TEXT NOT NULL,          -- relative to the origin's <data_root>/<data_type>/
    sha256      TEXT NOT NULL,          -- the version: hash of the content replicas store
    config_key  TEXT,
    size        INTEGER NOT NULL,       -- bytes of that content
    mtime       REAL NOT NULL,
    source_size INTEGER,                -- the origin's source file when it was hashed:
    source_mtime_ns INTEGER,            --   (st_dev, st_ino, size, mtime_ns, ctime_ns);
    source_dev  INTEGER,                --   a deletion needs all of them unchanged
    source_ino  INTEGER,
    source_ctime_ns INTEGER,
    superseded  INTEGER NOT NULL DEFAULT 0,  -- 1: the origin registered a newer version
    removed     INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (origin, data_type, path, sha256)
);
CREATE TABLE IF NOT EXISTS replicas (
    origin      TEXT NOT NULL,
    data_type   TEXT NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,          -- the version the holder stores
    node        TEXT NOT NULL,          -- the holder
    root_id     TEXT,                   -- the holder's data root id (engine/rootlock.py)
    verified_at REAL,                   -- when the holder hashed its stored bytes and they matched
    removed     INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (origin, data_type, path, sha256, node)
);
CREATE TABLE IF NOT EXISTS receipts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    origin       TEXT NOT NULL,
    data_type    TEXT NOT NULL,
    path         TEXT NOT NULL,
    source_node  TEXT NOT NULL,
    target_node  TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    verified_at  REAL NOT NULL,
    transport    TEXT NOT NULL,
    root_id      TEXT,                  -- the target's data root id, as it answered
    seq          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS capacity (
    node        TEXT PRIMARY KEY,
    used_bytes  INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    updated_at  REAL NOT NULL,
    seq         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS exclusions (
    node     TEXT NOT NULL,
    pattern  TEXT NOT NULL,             -- fnmatch over "<data_type>/<path>"
    reason   TEXT NOT NULL,
    removed  INTEGER NOT NULL DEFAULT 0,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (node, pattern)
);
CREATE TABLE IF NOT EXISTS deletions (
    origin      TEXT NOT NULL,          -- the node that deleted its source (the origin)
    data_type   TEXT NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,          -- the version the vouching holders confirmed
    size        INTEGER NOT NULL,       -- bytes freed
    vouched_by  TEXT NOT NULL,          -- JSON list of the holders that vouched, asked live
    deleted_at  REAL NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (origin, data_type, path, sha256)
);
CREATE INDEX IF NOT EXISTS artifacts_seq ON artifacts(seq);
CREATE INDEX IF NOT EXISTS artifacts_mtime ON artifacts(mtime);  -- newest first (GET /v1/artifacts)
CREATE INDEX IF NOT EXISTS replicas_node ON replicas(node);       -- what one node holds (scrub)
CREATE INDEX IF NOT EXISTS artifacts_origin ON artifacts(origin, data_type, path);
CREATE INDEX IF NOT EXISTS replicas_seq ON replicas(seq);
CREATE INDEX IF NOT EXISTS receipts_seq ON receipts(seq);
CREATE INDEX IF NOT EXISTS capacity_seq ON capacity(seq);
CREATE INDEX IF NOT EXISTS exclusions_seq ON exclusions(seq);
CREATE INDEX IF NOT EXISTS deletions_seq ON deletions(seq);
