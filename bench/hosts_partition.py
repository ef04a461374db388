"""Time from a partition to NODE_SUSPECT / NODE_DOWN, and from the heal to NODE_RECOVERED.

    .venv/bin/python bench/hosts_partition.py [--reps 5] [--configs test,default]
        [--hold random|SECONDS] [--seed 1] [--file-kb 200] [--tmpdir DIR]

Each config is a fresh ``tests.support.hosts.HostsCluster(gpus=2)`` (coord, gpu-1, gpu-2,
each a real ``ringsync --engine-only`` process in its own network namespace, links at the
harness's 1000 MB/s): ``test`` keeps the membership of tests/support/cluster.py
(``interval_seconds`` 0.5, suspect after 1 miss, down after 3); ``default`` sets it back to
the engine's own defaults (``engine.config.schema.Membership()``: 1.0 s, 1, 3). Everything
else is the harness's config (e.g. ``transfer.retry_max_seconds`` 2). Per repetition:

1. gpu-1 is cut off from everyone (``cluster.net.partition("gpu-1")``, nftables drops) and a
   random ``--file-kb`` KB file appears on gpu-1 at once (its backlog).
2. coord's event log is polled every 50 ms until NODE_SUSPECT and NODE_DOWN about gpu-1;
   **partition->suspect** and **partition->down** are the events' own ``ts`` (coord's
   time.time() at emission) minus the moment the rules went in (the midpoint of the ~20 ms
   ``nft`` call).
3. gpu-1 stays cut off for ``--hold`` s after NODE_DOWN (default: a random point in one
   silent membership round, so the heal lands anywhere in a round, as a real one would;
   healing right at NODE_DOWN would always fall just before the next round's request and
   make the recovery look instant), then is healed. **heal->recovered** is NODE_RECOVERED's
   ``ts`` minus the heal; **heal->backlog copied** the ``ts`` of coord's DATA_SYNC_COMPLETED
   for the backlog file minus the heal (the stored copy's bytes are checked too).
4. 1 s pause, so the next repetition starts from a settled cluster.

The membership daemon asks every node for ``/status`` every ``interval_seconds`` (from the
start of one round to the next) with a request timeout of max(1 s, interval)
(engine/daemons/membership.py); no answer is a miss. The bound printed is down_after_misses
x interval + that timeout. While gpu-1 is silent each round lasts the whole timeout and the
next starts at once, so misses come every max(interval, timeout): the model printed beside
the bound is suspect_after x max(interval, timeout) (+ up to one interval, depending on where
in a round the partition lands) and the same with down_after for NODE_DOWN. After the heal,
the request in flight still times out (its SYN was dropped; the retransmit comes after 1 s),
so heal->recovered is what is left of that round, up to max(interval, timeout).

Per-rep lines, then min / median / max of each figure per config. Figures, never
assertions; exit 1 only if a backlog copy's bytes were wrong. Not root: one line, exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.netns import unavailable  # noqa: E402

NODE = "gpu-1"
POLL = 0.05
STEP_TIMEOUT = 60.0
FIGURES = ("partition->suspect", "partition->down", "heal->recovered", "heal->backlog copied")


def membership_configs() -> dict[str, dict[str, Any] | None]:
    """The ``membership`` override per config: ``test`` none (tests/support/cluster.py's own
    settings), ``default`` the engine's defaults."""
    from engine.config.schema import Membership

    default = Membership()
    return {"test": None,
            "default": {"interval_seconds": float(default.interval_seconds),
                        "suspect_after_misses": default.suspect_after_misses,
                        "down_after_misses": default.down_after_misses}}


def events_after(cluster: Any, node: str, after: int) -> list[dict[str, Any]]:
    """``node``'s logged events with seq > ``after`` (a half-written last line is skipped)."""
    path = cluster.data_root(node) / ".ringsync" / "events.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event["seq"] > after:
            out.append(event)
    return out


def last_seq(cluster: Any, node: str) -> int:
    return max((e["seq"] for e in events_after(cluster, node, 0)), default=0)


def poll_for(cluster: Any, found: Any, what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """Call ``found()`` every POLL s until it returns something; fail if a node exits."""
    deadline = time.monotonic() + timeout
    while (value := found()) is None:
        for node in cluster.nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited:\n{cluster.log(node.name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:.0f}s")
        time.sleep(POLL)
    return value


def about(events: list[dict[str, Any]], type_: str, node: str = NODE) -> dict[str, Any] | None:
    return next((e for e in events if e["type"] == type_
                 and e["payload"].get("node") == node), None)


def timed(action: Any) -> float:
    """Run ``action``; the wall time its nftables rules took effect (the call's midpoint,
    within the ~20 ms an ``nft -f`` takes)."""
    before = time.time()
    action()
    return (before + time.time()) / 2


def one_rep(cluster: Any, rep: int, size: int, hold: float) -> dict[str, float]:
    from tests.support.files import write

    seq = last_seq(cluster, "coord")
    rel = f"npz/bench/backlog_{rep}.npz"
    body = os.urandom(size)
    t_part = timed(lambda: cluster.net.partition(NODE))
    write(cluster, NODE, rel, body)

    def seen(type_: str) -> Any:
        return lambda: about(events_after(cluster, "coord", seq), type_)

    suspect = poll_for(cluster, seen("NODE_SUSPECT"), "NODE_SUSPECT")
    down = poll_for(cluster, seen("NODE_DOWN"), "NODE_DOWN")
    if cluster.stored("coord", NODE, rel) is not None:
        raise RuntimeError(f"{rel} reached coord through the partition")
    time.sleep(max(0.0, hold - (time.time() - down["ts"])))
    t_heal = timed(lambda: cluster.net.heal(NODE))
    recovered = poll_for(cluster, seen("NODE_RECOVERED"), "NODE_RECOVERED")

    def copied() -> Any:
        for e in events_after(cluster, "coord", seq):
            if (e["type"] == "DATA_SYNC_COMPLETED" and e["payload"].get("source") == NODE
                    and rel in e["payload"].get("artifacts", [])):
                return e
        return None

    synced = poll_for(cluster, copied, f"coord's copy of {rel}")
    copy = cluster.stored("coord", NODE, rel)
    return {
        "hold": t_heal - down["ts"],
        "partition->suspect": suspect["ts"] - t_part,
        "partition->down": down["ts"] - t_part,
        "heal->recovered": recovered["ts"] - t_heal,
        "heal->backlog copied": synced["ts"] - t_heal,
        "suspect misses": suspect["payload"]["misses"],
        "down misses": down["payload"]["misses"],
        "intact": copy is not None and copy.read_bytes() == body,
    }


def run_config(work: Path, label: str, override: dict[str, Any] | None, reps: int,
               size: int, hold: float | None, rng: random.Random
               ) -> tuple[list[dict[str, Any]], bool]:
    from engine.config import load_config
    from tests.support.cluster import wait_for
    from tests.support.files import write
    from tests.support.hosts import HostsCluster

    cluster = HostsCluster(work / label, gpus=2,
                           config={"membership": override} if override else None)
    rows: list[dict[str, Any]] = []
    intact = True
    try:
        loaded = load_config(cluster.config_path).membership  # what the nodes will run with
        membership = {"interval_seconds": float(loaded.interval_seconds),
                      "suspect_after_misses": loaded.suspect_after_misses,
                      "down_after_misses": loaded.down_after_misses}
        interval = membership["interval_seconds"]
        timeout = max(1.0, interval)  # engine/daemons/membership.py: the /status request timeout
        down_n, suspect_n = membership["down_after_misses"], membership["suspect_after_misses"]
        round_s = max(interval, timeout)
        print(f"== {label}: membership interval {interval:g} s, suspect after {suspect_n}, "
              f"down after {down_n} misses, /status timeout {timeout:g} s", flush=True)
        print(f"   bound down_after x interval + timeout = {down_n * interval + timeout:.2f} s; "
              f"model: suspect {suspect_n * round_s:.2f}-{suspect_n * round_s + interval:.2f} s, "
              f"down {down_n * round_s:.2f}-{down_n * round_s + interval:.2f} s after the "
              f"partition (a silent round lasts {round_s:g} s)", flush=True)
        cluster.start()
        write(cluster, NODE, "npz/bench/warmup.npz", os.urandom(size))
        wait_for(lambda: cluster.stored("coord", NODE, "npz/bench/warmup.npz"), 30,
                 what="the warm-up copy")
        time.sleep(2 * interval + 0.5)  # coord has seen gpu-1 up in a few rounds
        for rep in range(1, reps + 1):
            row = one_rep(cluster, rep, size,
                          rng.uniform(0, round_s) if hold is None else hold)
            rows.append(row)
            intact &= row["intact"]
            print(f"   rep {rep}: " + "  ".join(f"{k} {row[k]:.2f} s" for k in FIGURES)
                  + f"  (healed {row['hold']:.2f} s after NODE_DOWN; misses "
                  f"{row['suspect misses']}/{row['down misses']}; copy "
                  f"{'ok' if row['intact'] else 'WRONG'})",
                  flush=True)
            time.sleep(1.0)
        down_gpu2 = [e for e in cluster.events("coord", "NODE_DOWN")
                     if e["payload"].get("node") == "gpu-2"]
        print(f"   gpu-2 (never cut off) NODE_DOWN events: {len(down_gpu2)}", flush=True)
    finally:
        cluster.stop_all()
    for key in FIGURES:
        values = [r[key] for r in rows]
        if values:
            print(f"   {key:22s} min {min(values):5.2f}  median {statistics.median(values):5.2f}"
                  f"  max {max(values):5.2f} s  (n={len(values)})", flush=True)
    return rows, intact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--configs", default="test,default",
                        help="membership configs to run: test, default (default: both)")
    parser.add_argument("--file-kb", type=int, default=200,
                        help="size of the file written on gpu-1 during each partition")
    parser.add_argument("--hold", default="random",
                        help="seconds from NODE_DOWN to the heal, or 'random' (default): "
                        "uniform over one silent round, max(interval, timeout)")
    parser.add_argument("--seed", type=int, default=1, help="for --hold random")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    args = parser.parse_args(argv)
    why = unavailable()
    if why is not None:
        print(f"hosts_partition: skipped: {why}")
        return 0
    configs = membership_configs()
    labels = [c for c in args.configs.split(",") if c]
    if any(c not in configs for c in labels) or args.reps < 1:
        parser.error(f"--configs from {sorted(configs)}; --reps >= 1")

    hold = None if args.hold == "random" else float(args.hold)
    rng = random.Random(args.seed)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-hosts-partition-", dir=args.tmpdir))
    wall = time.monotonic()
    ok = True
    try:
        print(f"gpu-1 partitioned from everyone, then healed after NODE_DOWN; events polled "
              f"every {POLL * 1000:.0f} ms, times from the events' own ts", flush=True)
        for label in labels:
            _, intact = run_config(work, label, configs[label], args.reps, args.file_kb * 1000,
                                   hold, rng)
            ok &= intact
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall time: {time.monotonic() - wall:.1f} s")
    if not ok:
        print("a backlog copy had wrong bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
