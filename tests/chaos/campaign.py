"""The seeded fault campaign: a real cluster, a generator, a fault injector and an oracle.

``run_seed(seed, workdir, fault_seconds=...)`` starts a coordinator, 3 GPU nodes and 2 CPU
nodes (each its own ``ringsync --engine-only`` process and data root; as root a real host in
its own network namespace, else on its own loopback port),
writes artifacts into the GPU nodes' data roots as docs/generators.md says, injects faults
chosen and timed by ``random.Random(seed)`` (as root, network faults too: ``NET_FAULTS``),
heals the cluster and judges it from files on disk.
See docs/chaos.md for what each fault and each verdict means.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.chaos.ledger import (DiskReader, Entry, Ledger, copy_paths, count_copies,
                                intact, is_db, row_digest, source_path, visible_files)
from tests.support.cluster import REPO, Cluster
from tests.support.hosts import HostsCluster
from tests.support.netns import unavailable as netns_unavailable

GPUS, CPUS = 3, 2
GPU_QUOTA = "3MiB"
MIN_COPIES = 2
GRACE = 2.0
"""Seconds before a deletion was seen within which a fault's damage to a copy is not held
against the engine (it vouched before the fault, the fault landed between vouch and unlink)."""
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
SMALL_FS_BYTES = 2 * 2**20
FAULTS = ("kill", "kill_coordinator", "stop_cont", "bit_rot", "replace_same_size",
          "append_rows", "collision", "clock_step", "restore_root", "crash_mid_delete")
NET_FAULTS = ("partition", "partial_partition", "loss", "link_flap")
"""Run too when the cluster is one of real hosts in network namespaces (root; CHAOS_NETWORK=0
turns them off): nftables partitions and loss, a link's carrier down and up."""


def log_line(fh, text: str) -> None:
    fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    fh.flush()


class _Pids:
    nodes: dict[str, Any]

    def pid(self, name: str) -> int | None:
        """The live pid of a node (``ip netns exec`` execs, so it is the node's own)."""
        p = self.nodes[name].proc
        return p.pid if p is not None and p.poll() is None else None


class ChaosCluster(_Pids, Cluster):
    """``Cluster`` plus the live pid of a node (its per-node environment, e.g. libfaketime, is
    ``Cluster.env``)."""


class HostsChaosCluster(_Pids, HostsCluster):
    """The same on real hosts: each node in its own network namespace (``HostsCluster``), so
    the network faults can run."""


def network_wanted() -> str | None:
    """Why the campaign runs without network faults (None: it runs them)."""
    if os.environ.get("CHAOS_NETWORK", "1") == "0":
        return "network faults off (CHAOS_NETWORK=0)"
    return netns_unavailable()


@dataclass
class Result:
    seed: int
    lost: list[dict] = field(default_factory=list)
    unsafe: list[dict] = field(default_factory=list)
    torn: list[dict] = field(default_factory=list)
    deletions: int = 0
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log_path: str = ""

    def line(self) -> str:
        return (f"chaos seed={self.seed} lost={len(self.lost)} unsafe_deletes={len(self.unsafe)} "
                f"torn={len(self.torn)} deletions={self.deletions} faults={len(self.faults)}")

    @property
    def ok(self) -> bool:
        return not self.lost and not self.unsafe and not self.torn and self.deletions > 0


class Campaign:
    def __init__(self, seed: int, workdir: Path, fault_seconds: float, heal_seconds: float) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.gen_rng = random.Random(seed * 7919 + 1)   # generator bytes: own stream, same seed
        self.workdir = workdir
        self.fault_seconds = fault_seconds
        self.heal_seconds = heal_seconds
        workdir.mkdir(parents=True, exist_ok=True)
        self.result = Result(seed, log_path=str(workdir / f"chaos-seed-{seed}.log"))
        self.log = open(self.result.log_path, "w")
        self.ledger = Ledger(workdir / "ledger.jsonl")
        self.reader = DiskReader()
        self.lock = threading.RLock()        # serialises fault injection with deletion checks
        self.stop_gen = threading.Event()
        self.stop_watch = threading.Event()
        self.damage: list[tuple[str, int, float, str]] = []   # (node, entry id, t, fault)
        self.rotted_sha: set[str] = set()
        self.seen_gone: dict[tuple[str, str, str], float] = {}   # key -> when first seen missing
        self.checked: set[tuple[tuple[str, str, str], int]] = set()
        self.event_offsets: dict[str, int] = {}
        self.deleted_events: list[dict] = []
        self.mounts: list[Path] = []
        self.strace: subprocess.Popen | None = None
        self.pending: list[tuple[float, Callable[[], None], str]] = []
        self.down: set[str] = set()      # killed or SIGTERMed, restart pending
        self.stopped: set[str] = set()   # SIGSTOPped
        self.seq = 0
        self.collide = 0
        self.threads: list[threading.Thread] = []

        names = ["coord"] + [f"gpu-{i}" for i in range(1, GPUS + 1)] + \
            [f"cpu-{i}" for i in range(1, CPUS + 1)]
        self.gpus = [n for n in names if n.startswith("gpu")]
        self.holders = [n for n in names if not n.startswith("gpu")]
        # Seeded campaign choices made up front.
        self.clock_node = self.rng.choice(names)
        self.small_fs_node = self.rng.choice([n for n in names if n.startswith("cpu")])
        self.restore_node = self.rng.choice([n for n in self.holders if n != self.small_fs_node])
        self.no_network = network_wanted()
        self.faults = FAULTS + (NET_FAULTS if self.no_network is None else ())
        self.net_faulted: set[str] = set()   # nodes under a network fault now
        self.fault_order = list(self.faults)
        self.rng.shuffle(self.fault_order)
        hosts: dict[str, Any] = {g: {"disk_quota": GPU_QUOTA} for g in self.gpus}
        hosts[self.small_fs_node] = {"disk_quota": "1GiB"}   # the quota does not save it: its disk is small
        cluster_class = ChaosCluster if self.no_network else HostsChaosCluster
        self.cluster = cluster_class(
            workdir / "cluster", gpus=GPUS, cpus=CPUS, interval=0.5, finished_after=0.5,
            config={"sync_routing": {"replication_target": 2},
                    "push": {"interval_seconds": 0.5, "min_copies_before_delete": MIN_COPIES},
                    "transfer": {"retry_base_seconds": 0.2, "retry_max_seconds": 2.0},
                    "hosts": hosts})
        self.roots = {n: self.cluster.data_root(n) for n in names}
        self.clock_file = workdir / "faketime.txt"

    # ------------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        self.result.notes.append(text)
        log_line(self.log, "NOTE " + text)

    def fault(self, text: str) -> None:
        self.result.faults.append(text)
        log_line(self.log, "FAULT " + text)

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        log_line(self.log, f"seed={self.seed} clock_node={self.clock_node} "
                           f"small_fs_node={self.small_fs_node} restore_node={self.restore_node} "
                           f"order={self.fault_order} engine={engine_commit()}")
        if self.no_network:
            self.note(f"network faults skipped: {self.no_network}")
        self.clock_file.write_text("+0\n")
        if Path(FAKETIME_LIB).exists():
            self.cluster.env[self.clock_node] = {
                "LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "NO_FAKE_STAT": "1"}
        else:
            self.note(f"clock_step skipped: {FAKETIME_LIB} missing (apt-get install faketime)")
        if os.geteuid() == 0:
            root = self.roots[self.small_fs_node]
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_BYTES}",
                            "ringsync-chaos", str(root)], check=True)
            self.mounts.append(root)
            self.fault(f"full_disk: {self.small_fs_node}'s data root on a "
                       f"{SMALL_FS_BYTES >> 20} MiB tmpfs (quota 1 GiB)")
        else:
            msg = "full_disk skipped: not root (cannot mount a small tmpfs)"
            print(msg)
            self.note(msg)
        self.cluster.start()

    def teardown(self) -> None:
        self.stop_gen.set()
        self.stop_watch.set()
        for t in self.threads:
            t.join(10)
        self._stop_strace()
        for name in self.cluster.nodes:
            pid = self.cluster.pid(name)
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        try:
            self.cluster.stop_all()
        finally:
            for m in self.mounts:
                subprocess.run(["umount", "-l", str(m)], check=False)
            self.mounts.clear()
            self.ledger.close()
            self.log.close()

    # -- generator -----------------------------------------------------------------------------
    def _write_file(self, node: str, rel: str, data: bytes, why: str = "generated") -> Entry | None:
        path = self.roots[node] / "npz" / rel
        tmp = path.with_name("." + path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log_line(self.log, f"gen {node} npz/{rel} not written: {exc}")
            return None
        import hashlib
        return self.ledger.add(node, "npz", rel, sha256=hashlib.sha256(data).hexdigest(), why=why)

    def _write_db(self, node: str, rel: str, games: int) -> Entry | None:
        path = self.roots[node] / "games" / rel
        rows = {f"{node}-{path.stem}-g{i}": self.gen_rng.randbytes(self.gen_rng.randint(1024, 6144))
                for i in range(games)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE games(game_id TEXT PRIMARY KEY, moves BLOB)")
                for i, item in enumerate(rows.items()):
                    db.execute("INSERT INTO games VALUES (?, ?)", item)
                    if i % 5 == 4:
                        db.commit()
                db.commit()
            finally:
                db.close()
        except (sqlite3.Error, OSError) as exc:
            log_line(self.log, f"gen {node} games/{rel} not finished: {exc}")
            return None
        return self.ledger.add(node, "games", rel,
                               rows={k: row_digest(v) for k, v in rows.items()})

    def generator(self) -> None:
        rng = self.gen_rng
        while not self.stop_gen.wait(rng.uniform(0.15, 0.35)):
            node = rng.choice(self.gpus)
            self.seq += 1
            key = rng.choice(["hex8_2p", "square8_4p"])
            try:
                if rng.random() < 0.35:
                    self._write_db(node, f"{key}/{node}_{self.seq:05d}.db", rng.randint(4, 12))
                else:
                    self._write_file(node, f"{key}/{node}_{self.seq:05d}.npz",
                                     rng.randbytes(rng.randint(16, 96) * 1024))
            except Exception:
                log_line(self.log, "generator error " + traceback.format_exc())

    # -- the deletion check (watcher) ----------------------------------------------------------
    def _tail_events(self) -> None:
        for node, root in self.roots.items():
            path = root / ".ringsync" / "events.jsonl"
            try:
                size = path.stat().st_size
            except OSError:
                continue
            off = self.event_offsets.get(node, 0)
            if size < off:
                off = 0   # a restored data root rewound its log
            with open(path, "rb") as f:
                f.seek(off)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.event_offsets[node] = off + end
            for line in data[:end].splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("type") != "ARTIFACT_DELETED":
                    continue
                ident = (node, ev.get("seq"), ev.get("ts"))
                if any((d["_ident"] == ident) for d in self.deleted_events):
                    continue
                p = ev["payload"]
                dt, _, rel = p["artifact"].partition("/")
                ev["_ident"] = ident
                self.deleted_events.append(ev)
                log_line(self.log, f"ARTIFACT_DELETED {p['node']} {p['artifact']} "
                                   f"sha={p['sha256'][:16]} vouched_by={p['vouched_by']}")
                key = (p["node"], dt, rel)
                self.seen_gone.setdefault(key, min(time.time(), float(ev.get("ts", time.time()))))
                self._check_deletion(key, via="event", event=p)

    def _scan_sources(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        for e in reversed(self.ledger.snapshot()):
            if e.key in seen:
                continue
            seen.add(e.key)
            exists = source_path(self.roots[e.origin], e).exists()
            if e.key in self.seen_gone:
                if exists:   # put back (a deletion undone after a crash): judge the next one too
                    del self.seen_gone[e.key]
                    self.checked = {c for c in self.checked if c[0] != e.key}
                    log_line(self.log, f"source {e.label()} is back")
                continue
            if not exists:
                self.seen_gone[e.key] = time.time()
                self._check_deletion(e.key, via="vanished")

    def _check_deletion(self, key: tuple[str, str, str], via: str,
                        event: dict | None = None) -> None:
        """A source is gone: were >= MIN_COPIES intact copies on other data roots, right now?"""
        with self.lock:
            versions = self.ledger.versions(key)
            if not versions:
                if event is not None:
                    self.note(f"deleted {key} is no ledger artifact")
                return
            latest = versions[-1]
            if (key, latest.version) in self.checked:
                return
            self.checked.add((key, latest.version))
            t_gone = self.seen_gone.get(key, time.time())
            # A version the generator finished within GRACE of the deletion may have been
            # vouched for as the version before it; accept either, the lost check still
            # judges the newest one at the end.
            candidates = [latest] + ([versions[-2]] if len(versions) > 1
                                     and latest.t >= t_gone - GRACE else [])
            best = None
            for e in candidates:
                cc = count_copies(self.reader, self.roots, e)
                credited = {n for (n, eid, t, _f) in self.damage
                            if eid == e.id and t >= t_gone - GRACE and n != e.origin}
                n_ok = len(cc.roots | credited)
                if best is None or n_ok > best[0]:
                    best = (n_ok, e, cc, credited)
            n_ok, e, cc, credited = best
            faults = [f"{f}@{n}" for (n, eid, t, f) in self.damage if eid == e.id]
            log_line(self.log, f"deletion check {e.label()} via={via} copies={sorted(cc.roots)} "
                               f"credited={sorted(credited)} fault_damage={faults}")
            if n_ok < MIN_COPIES:
                item = {"artifact": e.label(), "key": list(key), "version": e.version, "via": via, "intact_other_roots": sorted(cc.roots),
                        "credited": sorted(credited), "fault_damage": faults,
                        "event": {k: event[k] for k in ("sha256", "vouched_by")} if event else None,
                        "why": e.why}
                self.result.unsafe.append(item)
                log_line(self.log, "UNSAFE DELETE " + json.dumps(item))

    def watcher(self) -> None:
        while not self.stop_watch.wait(0.2):
            try:
                self._tail_events()
                self._scan_sources()
            except Exception:
                log_line(self.log, "watcher error " + traceback.format_exc())

    # -- faults --------------------------------------------------------------------------------
    def _running(self, among: list[str]) -> list[str]:
        return [n for n in among if n not in self.down and n not in self.stopped
                and self.cluster.pid(n)]

    def _later(self, delay: float, fn: Callable[[], None], what: str) -> None:
        self.pending.append((time.monotonic() + delay, fn, what))

    def _run_pending(self, force: bool = False) -> None:
        now = time.monotonic()
        due = [p for p in self.pending if force or p[0] <= now]
        self.pending = [p for p in self.pending if p not in due]
        for _t, fn, what in sorted(due, key=lambda p: p[0]):
            try:
                fn()
            except Exception:
                log_line(self.log, f"pending {what} failed " + traceback.format_exc())

    def _restart(self, name: str) -> None:
        for attempt in range(3):
            try:
                self.cluster.start_node(name, wait=True)
                break
            except AssertionError as exc:
                self.note(f"{name} did not come back (attempt {attempt + 1}): {str(exc)[-600:]}")
                proc = self.cluster.nodes[name].proc  # never two of it on one data root
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
                time.sleep(1)
        self.down.discard(name)
        log_line(self.log, f"restarted {name}")

    def _kill(self, name: str, what: str) -> None:
        proc = self.cluster.nodes[name].proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.down.add(name)
        delay = self.rng.uniform(1.0, 5.0)
        self.fault(f"{what}: SIGKILL {name}, restart in {delay:.1f}s")
        self._later(delay, lambda: self._restart(name), f"restart {name}")

    def f_kill(self) -> bool:
        c = self._running(self.gpus + [h for h in self.holders if h != "coord"])
        if not c:
            return False
        self._kill(self.rng.choice(c), "kill")
        return True

    def f_kill_coordinator(self) -> bool:
        if not self._running(["coord"]):
            return False
        self._kill("coord", "kill_coordinator")
        return True

    def f_stop_cont(self) -> bool:
        c = self._running(list(self.roots))
        if not c:
            return False
        name = self.rng.choice(c)
        pid = self.cluster.pid(name)
        os.kill(pid, signal.SIGSTOP)
        self.stopped.add(name)
        delay = self.rng.uniform(2.0, 8.0)
        self.fault(f"stop_cont: SIGSTOP {name}, SIGCONT in {delay:.1f}s")

        def cont() -> None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.stopped.discard(name)
        self._later(delay, cont, f"SIGCONT {name}")
        return True

    def _latest_entries(self) -> list[Entry]:
        out: dict[tuple, Entry] = {}
        for e in self.ledger.snapshot():
            out[e.key] = e
        return list(out.values())

    def f_bit_rot(self) -> bool:
        with self.lock:
            cands = []
            for e in self._latest_entries():
                for node, root in self.roots.items():
                    if node == e.origin:
                        continue
                    for p in copy_paths(root, e.origin, e.data_type, e.rel):
                        cands.append((e, node, p))
            self.rng.shuffle(cands)
            if self.rng.random() < 0.7:
                # most of the time: a copy of an artifact the origin may delete next (its source
                # is still there and enough copies exist), oldest first -- where a vouch from
                # a cached hash would delete the source behind the rotted copy
                ready = [c for c in cands if source_path(self.roots[c[0].origin], c[0]).is_file()]
                ready.sort(key=lambda c: c[0].t)
                cands = ready[:12] + cands
            for e, node, path in cands[:60]:
                if not intact(self.reader, path, e):
                    continue
                cc = count_copies(self.reader, self.roots, e)
                if len(cc.roots - {node}) < 1:
                    # never destroy the last intact copy ourselves; the source does not count:
                    # under disk pressure its origin may delete it the next moment
                    continue
                st = path.stat()
                if st.st_size < 2:
                    continue
                off = self.rng.randrange(min(st.st_size, 4096) // 2, st.st_size)
                with open(path, "r+b") as f:
                    f.seek(off)
                    b = f.read(1)
                    f.seek(off)
                    f.write(bytes([b[0] ^ 0xFF]))
                    f.flush()
                    os.fsync(f.fileno())
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                sha = self.reader.sha256(path)
                if sha:
                    self.rotted_sha.add(sha)
                self.damage.append((node, e.id, time.time(), "bit_rot"))
                self.fault(f"bit_rot: {node}:{path.relative_to(self.roots[node])} byte {off} "
                           f"flipped, size+mtime kept ({e.label()}, other intact: {cc.total() - 1})")
                return True
        return False

    def f_replace_same_size(self) -> bool:
        """Like ``cp -p other file``: same inode, same size, mtime set back; other bytes."""
        with self.lock:
            cands = [e for e in self._latest_entries() if e.data_type == "npz"
                     and source_path(self.roots[e.origin], e).is_file()]
            self.rng.shuffle(cands)
            # prefer a source whose old version is already on MIN_COPIES holders: the engine may
            # then delete the new bytes behind the old version's copies
            counted = [(e, count_copies(self.reader, self.roots, e)) for e in cands[:80]]
            counted.sort(key=lambda ec: -min(len(ec[1].roots), MIN_COPIES))
            for e, cc in counted:
                if not cc.source or len(cc.roots) < 1:
                    continue   # its old bytes must survive somewhere: we never lose data ourselves
                path = source_path(self.roots[e.origin], e)
                st = path.stat()
                data = self.gen_rng.randbytes(st.st_size)
                try:
                    with open(path, "r+b") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                except OSError as exc:
                    log_line(self.log, f"replace {e.label()} failed: {exc}")
                    continue
                import hashlib
                new = self.ledger.add(e.origin, "npz", e.rel,
                                      sha256=hashlib.sha256(data).hexdigest(),
                                      why="replaced_same_size")
                self.fault(f"replace_same_size: {e.origin}:npz/{e.rel} rewritten in place, "
                           f"size+mtime kept (v{e.version} -> v{new.version}; old copies on "
                           f"{sorted(cc.roots)})")
                return True
        return False

    def f_append_rows(self) -> bool:
        with self.lock:
            cands = [e for e in self._latest_entries() if e.data_type == "games"
                     and source_path(self.roots[e.origin], e).is_file()]
            # prefer one that was already pushed somewhere
            pushed = [e for e in cands if count_copies(self.reader, self.roots, e).roots]
            cands = pushed or cands
            if not cands:
                return False
            e = self.rng.choice(cands)
            path = source_path(self.roots[e.origin], e)
            extra = {f"{e.origin}-{path.stem}-a{e.version}-{i}": self.gen_rng.randbytes(2048)
                     for i in range(self.rng.randint(1, 4))}
            try:
                db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
                try:
                    db.executemany("INSERT INTO games VALUES (?, ?)", extra.items())
                    db.commit()
                finally:
                    db.close()
            except sqlite3.Error as exc:
                log_line(self.log, f"append to {e.label()} failed: {exc}")
                return False
            rows = self.reader.db_rows(path)
            if rows is None or not all(k in rows for k in extra):
                self.note(f"append to {e.label()}: the rows did not land in {path}")
                return False
            new = self.ledger.add(e.origin, "games", e.rel, rows=rows, why="rows_appended")
            self.fault(f"append_rows: {e.origin}:games/{e.rel} +{len(extra)} rows after push "
                       f"(v{new.version}, {len(rows)} rows)")
            return True

    def f_collision(self) -> bool:
        nodes = self.rng.sample(self.gpus, self.rng.randint(2, len(self.gpus)))
        self.collide += 1
        rel = f"shared/collide_{self.seed}_{self.collide:03d}.npz"
        size = self.rng.randint(16, 48) * 1024
        for n in nodes:
            self._write_file(n, rel, self.gen_rng.randbytes(size), why="collision")
        self.fault(f"collision: npz/{rel} written on {nodes} (different bytes, same size)")
        return True

    def f_clock_step(self) -> bool:
        if self.clock_node not in self.cluster.env:
            return False
        step = self.rng.choice(["+2h", "-2h", "+1d", "-30m", "+90m"])
        self.clock_file.write_text(step + "\n")
        delay = self.rng.uniform(4.0, 12.0)
        self.fault(f"clock_step: {self.clock_node} wall clock {step}, back to +0 in {delay:.1f}s")

        def back() -> None:
            self.clock_file.write_text("+0\n")
            log_line(self.log, f"clock of {self.clock_node} back to +0")
        self._later(delay, back, "clock back")
        return True

    def _stop_term(self, name: str) -> None:
        proc = self.cluster.nodes[name].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def snapshot_root(self) -> bool:
        name = self.restore_node
        if name in self.down or name in self.stopped or not self.cluster.pid(name):
            return False   # taken with the node stopped by us, not mid-fault: try again soon
        self._stop_term(name)
        snap = self.workdir / "snapshots" / name
        shutil.rmtree(snap, ignore_errors=True)
        shutil.copytree(self.roots[name], snap, symlinks=True)
        self._restart(name)
        self.snapshot_at = time.time()
        log_line(self.log, f"snapshot of {name}'s data root taken (node stopped)")
        return True

    def f_restore_root(self) -> bool:
        name = self.restore_node
        snap = self.workdir / "snapshots" / name
        if not snap.exists() or name in self.down or name in self.stopped:
            return False
        if sum(f.startswith("restore_root:") for f in self.result.faults) >= 2:
            return False   # twice per seed is enough; more only crowds out the other kinds
        with self.lock:
            self._stop_term(name)
            root = self.roots[name]
            # Never lose data ourselves: each version must keep an intact copy off this root.
            lose = []
            for e in self._latest_entries():
                cc = count_copies(self.reader, self.roots, e)
                if name in cc.roots and len(cc.roots - {name}) < 1:  # (the source may go)
                    snap_paths = copy_paths(snap, e.origin, e.data_type, e.rel)
                    if not any(intact(self.reader, p, e) for p in snap_paths):
                        lose.append(e.label())
            if lose:
                self.note(f"restore_root of {name} skipped: would drop the only copy of {lose[:5]}")
                self._restart(name)
                return False
            now = time.time()
            for e in self._latest_entries():
                if any(intact(self.reader, p, e)
                       for p in copy_paths(root, e.origin, e.data_type, e.rel)):
                    self.damage.append((name, e.id, now, "restore_root"))
            shutil.rmtree(root)
            shutil.copytree(snap, root, symlinks=True)
            self.fault(f"restore_root: {name}'s data root replaced by its snapshot from "
                       f"{now - self.snapshot_at:.0f}s earlier")
        self._restart(name)
        return True

    def _stop_strace(self) -> None:
        if self.strace is not None and self.strace.poll() is None:
            self.strace.terminate()   # detaches from the tracee
            try:
                self.strace.wait(5)
            except subprocess.TimeoutExpired:
                self.strace.kill()
                self.strace.wait()
        self.strace = None

    def f_crash_mid_delete(self) -> bool:
        """strace holds every unlink of a GPU node for 1.5 s at syscall entry; when a file sits
        in its .ringsync/deleting/ (renamed, not yet unlinked) the node gets SIGKILL."""
        if shutil.which("strace") is None:
            self.note("crash_mid_delete skipped: strace missing")
            return False
        c = self._running(self.gpus)
        if not c:
            return False
        # the GPU node that deleted most recently is the likeliest to delete again soon
        recent = [ev["payload"]["node"] for ev in self.deleted_events
                  if ev["payload"]["node"] in c]
        name = recent[-1] if recent and self.rng.random() < 0.8 else self.rng.choice(c)
        pid = self.cluster.pid(name)
        trash = self.roots[name] / ".ringsync" / "deleting"
        try:   # a file an earlier crash left there is not this deletion
            before = {p.name for p in trash.iterdir()} if trash.is_dir() else set()
        except OSError:
            before = set()
        slog = self.workdir / f"strace-{name}-{int(time.time())}.log"
        self.strace = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", str(slog), "-p", str(pid),
             "-e", "trace=unlink,unlinkat",
             "-e", "inject=unlink,unlinkat:delay_enter=1500000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        hit = None
        while time.monotonic() < deadline and self.strace.poll() is None:
            self._run_pending()
            try:
                # the renamed source (``<id>.trash``; older engines ``<uuid>-<name>``), not
                # the intent (``<id>.json``), which is written before the rename
                files = [p for p in trash.iterdir() if p.name not in before
                         and not p.name.endswith(".json")] if trash.is_dir() else []
            except OSError:
                files = []
            if files:
                hit = files
                break
            time.sleep(0.05)
        if hit:
            proc = self.cluster.nodes[name].proc
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self._stop_strace()
            self.down.add(name)
            self.fault(f"crash_mid_delete: SIGKILL {name} held in unlink with "
                       f"{[p.name for p in hit]} in .ringsync/deleting/")
            self._later(2.0, lambda: self._restart(name), f"restart {name}")
            return True
        self._stop_strace()
        log_line(self.log, f"crash_mid_delete on {name}: no deletion within 20 s")
        return False

    # -- network faults (real hosts only) ------------------------------------------------------
    def _net_target(self) -> str | None:
        c = [n for n in self.roots if n not in self.net_faulted]
        return self.rng.choice(c) if c else None

    def _net_heal_later(self, name: str, delay: float, undo: Callable[[], None],
                        what: str) -> None:
        def heal() -> None:
            undo()
            self.net_faulted.discard(name)
            log_line(self.log, f"healed {what}")
        self._later(delay, heal, f"heal {what}")

    def f_partition(self) -> bool:
        """Drop every packet between a node and every other node (not the harness, which
        must still restart it) for 3-8 s."""
        return self._partition("partition", lambda others: others)

    def f_partial_partition(self) -> bool:
        """Cut a node off from some of the others only (each side still sees the rest)."""
        return self._partition("partial_partition", lambda others: sorted(
            self.rng.sample(others, self.rng.randint(1, len(others) - 1))))

    def _partition(self, kind: str, pick: Callable[[list[str]], list[str]]) -> bool:
        name = self._net_target()
        if name is None:
            return False
        others = [n for n in self.roots if n != name]
        cut = pick(others)
        self.cluster.net.partition(name, from_=cut)
        self.net_faulted.add(name)
        delay = self.rng.uniform(3.0, 8.0)
        whom = "every node" if cut == others else str(cut)
        self.fault(f"{kind}: {name} cut off from {whom}, healed in {delay:.1f}s")
        self._net_heal_later(name, delay, lambda: self.cluster.net.heal(name),
                             f"{kind} of {name}")
        return True

    def f_loss(self) -> bool:
        """Drop 2-10 % of a node's packets at random, each way, for 5-12 s."""
        name = self._net_target()
        if name is None:
            return False
        percent = round(self.rng.uniform(2.0, 10.0), 1)
        self.cluster.net.loss(name, percent)
        self.net_faulted.add(name)
        delay = self.rng.uniform(5.0, 12.0)
        self.fault(f"loss: {percent} % of {name}'s packets dropped for {delay:.1f}s")
        self._net_heal_later(name, delay, lambda: self.cluster.net.loss(name, 0),
                             f"loss on {name}")
        return True

    def f_link_flap(self) -> bool:
        """Take a node's link down and up 2-4 times (0.3-1.5 s down each time). Done here,
        not through ``_later``: a restart that ``_run_pending`` waits on must not find the
        link left down."""
        name = self._net_target()
        if name is None:
            return False
        downs = [round(self.rng.uniform(0.3, 1.5), 2) for _ in range(self.rng.randint(2, 4))]
        self.fault(f"link_flap: {name}'s link down {len(downs)} times for {downs} s")
        try:
            for down in downs:
                self.cluster.net.link(name, False)
                time.sleep(down)
                self.cluster.net.link(name, True)
                time.sleep(self.rng.uniform(0.3, 1.0))
        finally:
            self.cluster.net.link(name, True)
        return True

    def injector(self, until: float) -> None:
        order = list(self.fault_order)
        snapshot_due = time.monotonic() + self.rng.uniform(6, 10)
        restore_due = time.monotonic() + min(self.fault_seconds * 0.6, 40)
        self.snapshot_at = 0.0
        next_fault = time.monotonic() + self.rng.uniform(3, 5)
        missed: dict[str, int] = {}
        while time.monotonic() < until:
            self._run_pending()
            now = time.monotonic()
            if snapshot_due and now >= snapshot_due:
                snapshot_due = 0 if self.snapshot_root() else now + 2
            if now >= next_fault:
                kind = order.pop(0) if order else self.rng.choice(self.faults)
                if kind == "restore_root" and (now < restore_due or not self.snapshot_at):
                    order.insert(min(2, len(order)), kind)
                    kind = self.rng.choice([f for f in self.faults if f != "restore_root"])
                try:
                    done = getattr(self, "f_" + kind)()
                except Exception:
                    log_line(self.log, f"fault {kind} error " + traceback.format_exc())
                    done = False
                if not done:
                    missed[kind] = missed.get(kind, 0) + 1
                    if missed[kind] < 4 and not any(f.startswith(kind) for f in self.result.faults):
                        order.append(kind)   # try it again later in the run
                # the first pass over every kind is quick, so a short seed runs each one
                next_fault = time.monotonic() + (self.rng.uniform(0.8, 2.0) if order
                                                 else self.rng.uniform(1.5, 4.0))
            time.sleep(0.05)
        self._run_pending(force=True)
        for kind in self.faults:
            if not any(f.startswith(kind + ":") for f in self.result.faults):
                self.note(f"fault {kind} did not run in this seed")

    # -- heal and judge ------------------------------------------------------------------------
    def heal(self) -> None:
        self._stop_strace()
        self.clock_file.write_text("+0\n")
        for name in list(self.stopped):
            pid = self.cluster.pid(name)
            if pid:
                os.kill(pid, signal.SIGCONT)
        self.stopped.clear()
        if self.no_network is None:
            self.pending = [p for p in self.pending if not p[2].startswith("heal ")]
            for name in self.cluster.nodes:
                self.cluster.net.clear(name)
            self.net_faulted.clear()
        log_line(self.log, "heal: restarting every node")
        for name in self.cluster.nodes:
            self._stop_term(name)
        for name in self.cluster.nodes:
            self._restart(name)
        deadline = time.monotonic() + self.heal_seconds
        short: list[str] = []
        while time.monotonic() < deadline:
            time.sleep(2)
            short = []
            for e in self._latest_entries():
                if count_copies(self.reader, self.roots, e).total() < MIN_COPIES:
                    short.append(e.label())
            if not short:
                break
        log_line(self.log, f"heal done: {len(short)} latest versions under {MIN_COPIES} intact "
                           f"copies: {short[:20]}")
        if short:
            self.note(f"after heal {len(short)} artifacts have fewer than {MIN_COPIES} intact "
                      f"copies (e.g. {short[:3]})")
        time.sleep(1)

    def judge(self) -> None:
        self._tail_events()
        self._scan_sources()
        res = self.result
        res.deletions = len(self.deleted_events)
        entries = self.ledger.snapshot()
        # a source that only vanished (no ARTIFACT_DELETED) and is back, intact, was not deleted
        for item in list(res.unsafe):
            if item["via"] != "vanished":
                continue
            key = tuple(item["key"])
            e = self.ledger.versions(key)[item["version"] - 1]
            if key not in self.seen_gone and intact(self.reader, source_path(self.roots[e.origin], e), e):
                res.unsafe.remove(item)
                self.note(f"{item['artifact']} vanished while short of copies but was put back "
                          f"intact: not counted as a deletion ({item})")
        # lost
        all_sha: dict[str, list[Path]] | None = None
        for e in entries:
            cc = count_copies(self.reader, self.roots, e)
            if cc.total() > 0:
                continue
            if e.sha256 is not None:
                if all_sha is None:
                    all_sha = {}
                    for root in self.roots.values():
                        for p in visible_files(root):
                            all_sha.setdefault(self.reader.sha256(p) or "", []).append(p)
                if e.sha256 in all_sha:
                    self.note(f"{e.label()} survives only at an unexpected path: "
                              f"{[str(p) for p in all_sha[e.sha256]][:3]}")
                    continue
            damage = [f"{f}@{n}" for (n, eid, t, f) in self.damage if eid == e.id]
            item = {"artifact": e.label(), "why": e.why, "fault_damage": damage}
            res.lost.append(item)
            log_line(self.log, "LOST " + json.dumps(item))
        # torn
        ledger_sha = {e.sha256 for e in entries if e.sha256}
        ledger_rows: dict[str, dict[str, str]] = {}
        for e in entries:
            if e.rows:
                ledger_rows.update(e.rows)
        rotted_visible = []
        for node, root in self.roots.items():
            for p in visible_files(root):
                rel = str(p.relative_to(root))
                if is_db(p.name):
                    rows = self.reader.db_rows(p)
                    if rows is not None and all(ledger_rows.get(k) == v for k, v in rows.items()):
                        continue
                elif self.reader.sha256(p) in ledger_sha:
                    continue
                if self.reader.sha256(p) in self.rotted_sha:
                    rotted_visible.append(f"{node}:{rel}")   # our own damage: reported, not torn
                    continue
                item = {"file": f"{node}:{rel}", "size": p.stat().st_size}
                res.torn.append(item)
                log_line(self.log, "TORN " + json.dumps(item))
        if rotted_visible:
            self.note(f"copies the injector rotted still visible after heal (scrub did not "
                      f"quarantine them): {rotted_visible[:10]} ({len(rotted_visible)})")
        for node, root in self.roots.items():
            d = root / ".ringsync" / "deleting"
            if d.is_dir() and any(d.iterdir()):
                self.note(f"{node}: files left in .ringsync/deleting/ after heal: "
                          f"{[p.name for p in d.iterdir()][:5]}")
        vanished = [k for k in self.seen_gone
                    if not any((ev["payload"]["node"], *ev["payload"]["artifact"].split("/", 1)) == k
                               for ev in self.deleted_events)]
        if vanished:
            self.note(f"sources gone without an ARTIFACT_DELETED event: {vanished[:10]} "
                      f"({len(vanished)})")
        for m in self.mounts:
            st = os.statvfs(m)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            self.note(f"small filesystem {m.name}: {used >> 10} KiB of "
                      f"{(st.f_blocks * st.f_frsize) >> 10} KiB used at the end")
        log_line(self.log, f"ledger: {len(entries)} versions; deletions: {res.deletions}")
        log_line(self.log, res.line())

    def run(self) -> Result:
        try:
            self.setup()
            gen = threading.Thread(target=self.generator, name="generator", daemon=True)
            watch = threading.Thread(target=self.watcher, name="watcher", daemon=True)
            self.threads = [gen, watch]
            gen.start()
            watch.start()
            self.injector(time.monotonic() + self.fault_seconds)
            self.stop_gen.set()
            gen.join(10)
            self.heal()
            self.stop_watch.set()
            watch.join(10)
            self.judge()
        except Exception:
            self.note("campaign error: " + traceback.format_exc())
            raise
        finally:
            self.teardown()
        return self.result


def engine_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_seed(seed: int, workdir: Path, fault_seconds: float = 60.0,
             heal_seconds: float = 40.0) -> Result:
    return Campaign(seed, workdir, fault_seconds, heal_seconds).run()
