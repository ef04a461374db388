"""The demo's synthetic self-play generator and its ledger (engine.demo)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.demo.generator import SelfPlayGenerator
from engine.demo.ledger import LedgerEntry, find_intact_copy, is_intact, read_ledger

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)


def _generate(tmp_path: Path, **kw: object) -> tuple[Path, Path, SelfPlayGenerator]:
    root, ledger = tmp_path / "root", tmp_path / "ledger.jsonl"
    args: dict[str, object] = dict(config_keys=["hex8_2p", "square8_2p"], games_per_db=3,
                                   game_interval=0.002, npz_every=1, npz_bytes=20_000, seed=7)
    args.update(kw)
    gen = SelfPlayGenerator(root, "n1", ledger, **args)  # type: ignore[arg-type]
    gen.run(None, duration=0.6)
    return root, ledger, gen


def _entry(ledger: Path, data_type: str) -> LedgerEntry:
    return next(e for e in read_ledger(ledger) if e.data_type == data_type)


def test_generator_writes_finished_dbs_npz_and_ledger(tmp_path: Path) -> None:
    root, ledger, gen = _generate(tmp_path)
    entries = read_ledger(ledger)
    games = [e for e in entries if e.data_type == "games"]
    npzs = [e for e in entries if e.data_type == "npz"]
    dbs = sorted(p.relative_to(root / "games").as_posix() for p in (root / "games").glob("*/*.db"))
    assert len(games) >= 4 and sorted(e.path for e in games) == dbs
    assert {e.path.split("/")[0] for e in games} == {"hex8_2p", "square8_2p"}
    # closed: no sidecars anywhere, no temp files
    leftovers = [p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith((".db", ".npz"))]
    assert leftovers == []
    all_ids: list[str] = []
    for e in games:
        path = root / "games" / e.path
        with _ro(path) as conn:
            cols = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("games", "moves")}
            assert cols == {"games": ["game_id", "config_key", "board", "winner", "num_moves", "created_at"],
                            "moves": ["game_id", "move_no", "player", "move"]}
            rows = conn.execute("SELECT game_id, config_key FROM games ORDER BY rowid").fetchall()
        conn.close()
        assert [r[0] for r in rows] == e.game_ids and {r[1] for r in rows} == {e.path.split("/")[0]}
        with open(path, "rb") as fh:
            assert fh.read(20)[18:20] == b"\x02\x02"  # WAL mode in the header
        assert is_intact(path, e) and e.node == "n1"
        all_ids += e.game_ids or []
    assert len(all_ids) == len(set(all_ids)) == gen.games_written
    assert len(npzs) == len(games) and gen.npz_written == len(npzs)
    for e in npzs:
        path = root / "npz" / e.path
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == e.sha256 and len(data) == e.size
        assert 0.8 * 20_000 < len(data) < 1.3 * 20_000
        with np.load(path) as z:
            n = z["values"].shape[0]
            assert z["features"].dtype == z["policy"].dtype == z["values"].dtype == np.float32
            assert z["features"].shape[0] == n and z["features"].shape[2:] == (8, 8)
            assert z["policy"].shape == (n, 64)
        assert is_intact(path, e)
        assert find_intact_copy(e, [tmp_path / "nowhere", root]) == path


def test_open_db_is_unfinished_until_stop(tmp_path: Path) -> None:
    root, ledger, stop = tmp_path / "root", tmp_path / "ledger.jsonl", threading.Event()
    gen = SelfPlayGenerator(root, "n1", ledger, ["hex8_2p"], games_per_db=10_000, game_interval=0.01,
                            npz_every=1, npz_bytes=10_000, seed=1)
    t = threading.Thread(target=gen.run, args=(stop, None))
    t.start()
    try:
        db = root / "games" / "hex8_2p" / "n1_000001.db"
        wal = db.with_name(db.name + "-wal")
        deadline = time.monotonic() + 5  # a loaded machine may take a moment for the first game
        while not (wal.exists() and wal.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.exists() and wal.exists() and wal.stat().st_size > 0  # being written
        assert read_ledger(ledger) == []
    finally:
        stop.set()
        t.join(2.0)
    assert not t.is_alive()
    assert not wal.exists()
    games = [e for e in read_ledger(ledger) if e.data_type == "games"]
    assert [e.path for e in games] == ["hex8_2p/n1_000001.db"]
    assert len(games[0].game_ids or []) == gen.games_written >= 1 and is_intact(db, games[0])


def test_restart_never_overwrites(tmp_path: Path) -> None:
    root, ledger, _ = _generate(tmp_path)
    first = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    _generate(tmp_path, seed=8)
    assert all(p.read_bytes() == b for p, b in first.items())
    paths = [(e.data_type, e.path) for e in read_ledger(ledger)]
    assert len(paths) == len(set(paths))
    assert all(find_intact_copy(e, [root]) for e in read_ledger(ledger))


def test_is_intact_false_for_deleted_game_row(tmp_path: Path) -> None:
    root, ledger, _ = _generate(tmp_path)
    e = _entry(ledger, "games")
    copy = tmp_path / "copy.db"
    shutil.copy(root / "games" / e.path, copy)
    assert is_intact(copy, e)
    conn = sqlite3.connect(copy)
    with conn:
        conn.execute("DELETE FROM games WHERE game_id = ?", ((e.game_ids or [])[-1],))
    conn.close()
    assert not is_intact(copy, e)


def test_is_intact_false_for_missing_moves(tmp_path: Path) -> None:
    root, ledger, _ = _generate(tmp_path)
    e = _entry(ledger, "games")
    copy = tmp_path / "copy.db"
    shutil.copy(root / "games" / e.path, copy)
    conn = sqlite3.connect(copy)
    with conn:
        conn.execute("DELETE FROM moves WHERE game_id = ? AND move_no = 0", ((e.game_ids or [])[0],))
    conn.close()
    assert not is_intact(copy, e)


@pytest.mark.parametrize("keep", [0, 50, 0.5])
def test_is_intact_false_for_truncated_db(tmp_path: Path, keep: float) -> None:
    root, ledger, _ = _generate(tmp_path)
    e = _entry(ledger, "games")
    copy = tmp_path / "copy.db"
    shutil.copy(root / "games" / e.path, copy)
    size = copy.stat().st_size
    os.truncate(copy, int(size * keep) if isinstance(keep, float) else keep)
    assert not is_intact(copy, e)


def test_is_intact_false_for_flipped_npz_byte_and_missing_files(tmp_path: Path) -> None:
    root, ledger, _ = _generate(tmp_path)
    e = _entry(ledger, "npz")
    copy = tmp_path / "copy.npz"
    shutil.copy(root / "npz" / e.path, copy)
    assert is_intact(copy, e)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    assert not is_intact(copy, e)
    assert not is_intact(tmp_path / "missing.npz", e)
    assert not is_intact(tmp_path / "missing.db", _entry(ledger, "games"))
    assert find_intact_copy(e, [tmp_path / "empty-root"]) is None


def test_find_intact_copy_skips_corrupt_root(tmp_path: Path) -> None:
    root, ledger, _ = _generate(tmp_path)
    e = _entry(ledger, "games")
    bad = tmp_path / "bad" / "games" / e.path
    bad.parent.mkdir(parents=True)
    bad.write_bytes((root / "games" / e.path).read_bytes()[:4096])
    assert find_intact_copy(e, [tmp_path / "bad", root]) == root / "games" / e.path
    assert find_intact_copy(LedgerEntry("n1", "games", "../root/games/" + e.path, e.game_ids,
                                        None, None, 0.0), [tmp_path / "bad"]) is None


def test_is_intact_never_touches_the_db(tmp_path: Path) -> None:
    root, ledger, _ = _generate(tmp_path)
    e = _entry(ledger, "games")
    db = root / "games" / e.path
    before = (db.read_bytes(), db.stat().st_mtime_ns, sorted(os.listdir(db.parent)))
    assert is_intact(db, e)
    assert before == (db.read_bytes(), db.stat().st_mtime_ns, sorted(os.listdir(db.parent)))


def test_read_ledger_tolerates_torn_last_line(tmp_path: Path) -> None:
    ledger = tmp_path / "l.jsonl"
    rec = {"node": "n", "data_type": "npz", "path": "k/a.npz", "sha256": "00", "size": 3, "finished_at": 1.0}
    ledger.write_text(json.dumps(rec) + "\n" + json.dumps(rec)[:25])
    assert [e.path for e in read_ledger(ledger)] == ["k/a.npz"]
    assert read_ledger(tmp_path / "absent.jsonl") == []


def test_subprocess_sigterm_exits_cleanly(tmp_path: Path) -> None:
    root, ledger = tmp_path / "root", tmp_path / "ledger.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.demo.generator", "--root", str(root), "--node", "gpu-1",
         "--ledger", str(ledger), "--games-per-db", "4", "--game-interval", "0.01",
         "--npz-every", "1", "--npz-bytes", "30000", "--seed", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = proc.wait(timeout=2.0)
        assert time.monotonic() - t0 < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    for line in ledger.read_text().splitlines():
        json.loads(line)
    entries = read_ledger(ledger)
    assert any(e.data_type == "games" for e in entries) and any(e.data_type == "npz" for e in entries)
    assert all(find_intact_copy(e, [root]) == root / e.data_type / e.path for e in entries)
    on_disk = {(p.parent.parent.name, p.relative_to(p.parent.parent).as_posix())
               for p in root.glob("*/*/*") if p.is_file()}
    assert on_disk == {(e.data_type, e.path) for e in entries}  # everything closed and recorded
