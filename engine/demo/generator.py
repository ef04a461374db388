"""Synthetic self-play generator: stands in for a GPU node's game generation in ``ringsync demo``.

Runs as its own OS process (the writer is *not* ringsync)::

    python -m engine.demo.generator --root DATA_ROOT --node NAME --ledger LEDGER.jsonl \
        [--config-keys hex8_2p,square8_2p] [--games-per-db 20] [--game-interval 0.05] \
        [--npz-every 2] [--npz-bytes 200000] [--moves-per-game 30..60] [--seed N] [--duration S]

It writes, under the node's data root (data types are the directories directly below it):

* ``games/<config_key>/<node>_<seq:06d>.db``: SQLite in WAL mode, one transaction per game
  (the game row and its moves), one game every ``--game-interval`` seconds. After
  ``--games-per-db`` games the connection is closed, which checkpoints the WAL and removes the
  ``-wal``/``-shm`` files, and the next DB is started.
* ``npz/<config_key>/<node>_<seq:06d>.npz``: every ``--npz-every`` finished DBs of a config key,
  training arrays derived from that DB's games (same seq), written to ``.<name>.tmp``, fsynced,
  then ``os.replace``-d.
* one ledger line per finished artifact (see :mod:`engine.demo.ledger`), outside the data root.

The finished rule for generator writers (what a sync engine may treat as complete):

* a games DB is finished when its writer's connection is closed, i.e. no ``-wal`` or
  ``-journal`` sidecar with content exists next to it, and it has been idle (mtime unchanged)
  for ``transfer.finished_after_seconds``. A DB that is still being written always has a
  non-empty ``-wal`` here (WAL mode, commits land in the WAL until the final checkpoint);
* an NPZ only ever appears under its final name finished: while being written it is a hidden
  temp file whose name begins with ``.`` and ends with ``.tmp``, which must be ignored.

On SIGTERM/SIGINT (or after ``--duration``) the open DB is closed and recorded, and the process
exits 0, well within 2 s. Sequence numbers continue after any existing files of this node, so a
restarted generator never overwrites its earlier output.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.demo.ledger import sha256_file, append_ledger, read_ledger
from engine.diskio import fsync_dir

if TYPE_CHECKING:
    import numpy as np

# numpy is imported lazily so that main() installs its signal handlers ~0.3 s sooner.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS games(game_id TEXT PRIMARY KEY, config_key TEXT, board TEXT,
    winner INTEGER, num_moves INTEGER, created_at REAL);
CREATE TABLE IF NOT EXISTS moves(game_id TEXT, move_no INTEGER, player INTEGER, move TEXT,
    PRIMARY KEY(game_id, move_no));
"""


def _players(config_key: str) -> int:
    m = re.search(r"_(\d+)p$", config_key)
    return max(1, int(m.group(1))) if m else 2


class SelfPlayGenerator:
    """Writes synthetic games DBs and NPZ files for one node, recording each in the ledger."""

    def __init__(self, root: Path | str, node: str, ledger: Path | str,
                 config_keys: Sequence[str] = ("hex8_2p", "square8_2p"), games_per_db: int = 20,
                 game_interval: float = 0.05, npz_every: int = 2, npz_bytes: int = 200_000,
                 seed: int | None = None, *, moves_per_game: tuple[int, int] = (30, 60)) -> None:
        self.root, self.node, self.ledger = Path(root), node, Path(ledger)
        self.config_keys = list(config_keys)
        if not _NAME_RE.match(node) or not self.config_keys or not all(
                _NAME_RE.match(k) for k in self.config_keys):
            raise ValueError("node and config keys must be plain names ([A-Za-z0-9_.-], no leading '.')")
        if games_per_db < 1 or game_interval < 0 or npz_bytes < 1:
            raise ValueError("games_per_db >= 1, game_interval >= 0, npz_bytes >= 1 required")
        lo, hi = moves_per_game
        if not 1 <= lo <= hi:
            raise ValueError(f"bad moves_per_game {moves_per_game}")
        if self.ledger.resolve().is_relative_to(self.root.resolve()):
            raise ValueError("the ledger must live outside the data root")
        self.games_per_db, self.game_interval = games_per_db, game_interval
        self.npz_every, self.npz_bytes, self.moves_per_game = npz_every, npz_bytes, (lo, hi)
        import numpy as np

        self.rng: np.random.Generator = np.random.default_rng(seed)
        self.games_written = self.dbs_finished = self.npz_written = 0
        self._finished_per_key: dict[str, int] = {}  # NPZ cadence is per config key
        self._conn: sqlite3.Connection | None = None
        self._db_path: Path | None = None
        self._db_key, self._db_seq = "", 0
        self._games: list[tuple[str, int, int]] = []  # (game_id, num_moves, winner)
        self._seq = self._last_seq() + 1

    def _last_seq(self) -> int:
        """Highest sequence number this node already used (files on disk or ledger)."""
        pat = re.compile(rf"^\.?{re.escape(self.node)}_(\d+)\.(?:db|npz)(?:\.tmp)?$")
        best = 0
        for dtype in ("games", "npz"):
            for f in (self.root / dtype).glob("*/*"):
                if m := pat.match(f.name):
                    best = max(best, int(m.group(1)))
        for e in read_ledger(self.ledger):
            if e.node == self.node and (m := pat.match(e.path.rsplit("/", 1)[-1])):
                best = max(best, int(m.group(1)))
        return best

    def _open_db(self) -> None:
        key = self.config_keys[(self.dbs_finished) % len(self.config_keys)]
        while True:
            name = f"{self.node}_{self._seq:06d}"
            db = self.root / "games" / key / f"{name}.db"
            if not db.exists() and not (self.root / "npz" / key / f"{name}.npz").exists():
                break
            self._seq += 1
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.commit()
        self._conn, self._db_path, self._db_key, self._db_seq = conn, db, key, self._seq
        self._seq += 1
        self._games = []

    def _write_game(self) -> None:
        """Insert one game and its moves in a single transaction."""
        if self._conn is None:
            self._open_db()
        assert self._conn is not None
        key, players = self._db_key, _players(self._db_key)
        game_id = f"{self.node}-{self._db_seq}-{len(self._games) + 1}"
        num_moves = int(self.rng.integers(self.moves_per_game[0], self.moves_per_game[1] + 1))
        winner = int(self.rng.integers(0, players + 1))  # 0 = draw
        cells = self.rng.integers(0, 64, size=num_moves)
        moves = [(game_id, i, i % players + 1, f"{'abcdefgh'[c % 8]}{c // 8 + 1}")
                 for i, c in enumerate(cells.tolist())]
        with self._conn:  # BEGIN ... COMMIT (rolls back on error)
            self._conn.execute("INSERT INTO games VALUES (?,?,?,?,?,?)",
                               (game_id, key, key.split("_")[0], winner, num_moves, time.time()))
            self._conn.executemany("INSERT INTO moves VALUES (?,?,?,?)", moves)
        self._games.append((game_id, num_moves, winner))
        self.games_written += 1

    def _finish_db(self) -> None:
        """Close the open DB (checkpoint, sidecars removed), record it, maybe derive an NPZ."""
        if self._conn is None or self._db_path is None:
            return
        self._conn.close()
        self._conn = None
        fsync_dir(self._db_path.parent)
        games, key, seq = self._games, self._db_key, self._db_seq
        append_ledger(self.ledger, {
            "node": self.node, "data_type": "games", "path": f"{key}/{self._db_path.name}",
            "game_ids": [g[0] for g in games], "finished_at": time.time()})
        self.dbs_finished += 1
        self._finished_per_key[key] = done = self._finished_per_key.get(key, 0) + 1
        if self.npz_every > 0 and done % self.npz_every == 0 and games:
            self._write_npz(key, seq, games)

    def _write_npz(self, key: str, seq: int, games: list[tuple[str, int, int]]) -> None:
        """Training arrays from the DB's positions; temp file, fsync, rename, then ledger."""
        import numpy as np

        players = _players(key)
        # (player to move, winner) of every position in the DB
        pos = np.array([(i % players + 1, w) for _, n, w in games for i in range(n)], dtype=np.int64)
        n = int(min(len(pos), max(1, self.npz_bytes // (4 * (64 * 4 + 65)))))
        chans = max(1, round((self.npz_bytes / (4 * n) - 65) / 64))
        pick = pos[self.rng.choice(len(pos), size=n, replace=False)]
        values = np.where(pick[:, 1] == 0, 0.0, np.where(pick[:, 0] == pick[:, 1], 1.0, -1.0))
        policy = self.rng.random((n, 64), dtype=np.float32)
        policy /= policy.sum(axis=1, keepdims=True)
        features = self.rng.standard_normal((n, chans, 8, 8), dtype=np.float32)
        out_dir = self.root / "npz" / key
        out_dir.mkdir(parents=True, exist_ok=True)
        name = f"{self.node}_{seq:06d}.npz"
        tmp, final = out_dir / f".{name}.tmp", out_dir / name
        with open(tmp, "wb") as fh:
            np.savez(fh, features=features, policy=policy, values=values.astype(np.float32))
            fh.flush()
            os.fsync(fh.fileno())
        digest, size = sha256_file(tmp), tmp.stat().st_size
        os.replace(tmp, final)
        fsync_dir(out_dir)
        append_ledger(self.ledger, {"node": self.node, "data_type": "npz", "path": f"{key}/{name}",
                                    "sha256": digest, "size": size, "finished_at": time.time()})
        self.npz_written += 1

    def run(self, stop_event: threading.Event | None = None, duration: float | None = None) -> None:
        """Generate until ``stop_event`` is set or ``duration`` seconds pass; always finishes the open DB."""
        stop = stop_event or threading.Event()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._write_game()
                if len(self._games) >= self.games_per_db:
                    self._finish_db()
                wait = self.game_interval
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if stop.wait(wait):
                    break
        finally:
            self._finish_db()


def _moves_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("..")
    return int(lo), int(hi or lo)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exits 0 after a clean stop on SIGTERM/SIGINT or ``--duration``."""
    p = argparse.ArgumentParser(prog="python -m engine.demo.generator", description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--node", required=True)
    p.add_argument("--ledger", required=True, type=Path)
    p.add_argument("--config-keys", default="hex8_2p,square8_2p")
    p.add_argument("--games-per-db", type=int, default=20)
    p.add_argument("--game-interval", type=float, default=0.05)
    p.add_argument("--npz-every", type=int, default=2)
    p.add_argument("--npz-bytes", type=int, default=200_000)
    p.add_argument("--moves-per-game", type=_moves_range, default=(30, 60))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--duration", type=float, default=None)
    stop = threading.Event()
    # Event.set() from the handler could deadlock if the signal lands while the main thread holds
    # the event's internal lock (inside Event.wait); setting it from a short-lived thread cannot.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: threading.Thread(target=stop.set, daemon=True).start())
    a = p.parse_args(argv)
    gen = SelfPlayGenerator(a.root, a.node, a.ledger, [k for k in a.config_keys.split(",") if k],
                            a.games_per_db, a.game_interval, a.npz_every, a.npz_bytes, a.seed,
                            moves_per_game=a.moves_per_game)
    gen.run(stop, a.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
