-- ClusterManifest schema. Every row carries `seq`: the node's sequence number at
-- its last change, so peers ask for `seq > N` and get only what changed.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    data_type   TEXT NOT NULL,
    path        TEXT NOT NULL,          -- relative to <data_root>/<data_type>/
    config_key  TEXT,
    size        INTEGER NOT NULL,       -- bytes of the content replicas store
    sha256      TEXT NOT NULL,          -- hash of that content
    mtime       REAL NOT NULL,
    origin      TEXT NOT NULL,          -- node that produced it
    source_size INTEGER,                -- live source file's size when hashed (change detection)
    source_mtime_ns INTEGER,            -- live source file's mtime when hashed
    removed     INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (data_type, path)
);
CREATE TABLE IF NOT EXISTS replicas (
    data_type   TEXT NOT NULL,
    path        TEXT NOT NULL,
    node        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    verified_at REAL,                   -- when the holder hashed its stored bytes and they matched
    removed     INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (data_type, path, node)
);
CREATE TABLE IF NOT EXISTS receipts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    data_type    TEXT NOT NULL,
    path         TEXT NOT NULL,
    source_node  TEXT NOT NULL,
    target_node  TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    verified_at  REAL NOT NULL,
    transport    TEXT NOT NULL,
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
    data_type   TEXT NOT NULL,
    path        TEXT NOT NULL,
    node        TEXT NOT NULL,          -- the node that deleted its source (the artifact's origin)
    sha256      TEXT NOT NULL,          -- the content the vouching holders confirmed
    size        INTEGER NOT NULL,       -- bytes freed
    vouched_by  TEXT NOT NULL,          -- JSON list of the holders that vouched, asked live
    deleted_at  REAL NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (data_type, path, node)
);
CREATE INDEX IF NOT EXISTS artifacts_seq ON artifacts(seq);
CREATE INDEX IF NOT EXISTS artifacts_mtime ON artifacts(mtime);  -- newest first (GET /v1/artifacts)
CREATE INDEX IF NOT EXISTS replicas_node ON replicas(node);       -- what one node holds (verify)
CREATE INDEX IF NOT EXISTS replicas_seq ON replicas(seq);
CREATE INDEX IF NOT EXISTS receipts_seq ON receipts(seq);
CREATE INDEX IF NOT EXISTS capacity_seq ON capacity(seq);
CREATE INDEX IF NOT EXISTS exclusions_seq ON exclusions(seq);
CREATE INDEX IF NOT EXISTS deletions_seq ON deletions(seq);
