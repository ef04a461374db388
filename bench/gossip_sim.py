"""How many gossip rounds until every node knows a new artifact, and what an idle exchange costs.

    .venv/bin/python bench/gossip_sim.py [--nodes 32 256] [--fanout 3 1] [--trials 20]
                                         [--seed 1] [--json]

In-process, with the engine's own protocol: every node is a real ``ClusterManifest`` (SQLite
``:memory:``) with its ``engine.gossip.protocol.Gossip``; the network is direct calls with
every message JSON-encoded and decoded on the way, so byte counts are those of the HTTP
bodies. Per (N, fanout), each trial on a fresh cluster warmed up by an idle round (so
cursors and peer views are set): one random node registers a new artifact and synchronous
rounds run until every manifest holds that artifact's row; the count of rounds is the
figure (median and max over the trials, next to the target log2 N + ln N), with the JSON
bytes all exchanges of the spread cost (KB/spread). Fresh clusters keep trials independent:
in a long-lived cluster an exchange carries every row the peer changed since the two last
met (about N / 2k rounds earlier), most of them already known to the requester, so the
bytes per spread there are several times higher than shown.

No flattering: a row learned in round r is relayed from round r+1 only. Each round runs in
two phases: first every node, for each of its k random peers, builds its request, gets the
peer's answer and builds its follow-up delta — all from the states at the round's start,
because nothing is merged in this phase (the answers and deltas are kept); then every kept
answer and delta is merged (``absorb``, ``take_delta``, ``acknowledge``). So what a node
learns in a round reaches no one else before the next round, whatever order the exchanges
run in. (A real node merges each answer at once and may pass it on in the same interval, so
real spreading is at least this fast.)

Also printed: the bytes of one idle anti-entropy exchange between two synced nodes of the
warmed-up 32-node cluster (request + answer JSON bodies; target < 1 KB), and the same with
HTTP/1.1 headers as aiohttp sends and answers them (estimated from a typical header block).
Figures, never assertions.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from engine.config.schema import AutoSync  # noqa: E402
from engine.gossip import Gossip  # noqa: E402
from engine.manifest import Artifact, ClusterManifest, Replica  # noqa: E402

MAX_ROUNDS = 200
REQUEST_HEADERS = (
    "POST /v1/gossip HTTP/1.1\r\nHost: 10.0.0.12:8770\r\n"
    "Authorization: Bearer " + "x" * 43 + "\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
    "User-Agent: Python/3.11 aiohttp/3.9.5\r\nContent-Type: application/json\r\n"
    "Content-Length: 000\r\n\r\n")
"""A typical header block of the daemon's POST (a 43-character token)."""
RESPONSE_HEADERS = (
    "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 000\r\nDate: Sat, 28 Nov 2026 12:00:00 GMT\r\n"
    "Server: Python/3.11 aiohttp/3.9.5\r\n\r\n")


def wire(msg: Any) -> tuple[Any, int]:
    """``msg`` as the other side receives it, and its size in bytes."""
    raw = json.dumps(msg, separators=(",", ":")).encode()
    return json.loads(raw), len(raw)


class SimCluster:
    """N gossip nodes over in-memory manifests, exchanging in synchronous rounds."""

    def __init__(self, n: int, fanout: int, rng: random.Random) -> None:
        self.names = [f"node-{i:03d}" for i in range(n)]
        self.fanout = fanout
        self.rng = rng
        self.nodes = {name: Gossip(ClusterManifest(":memory:", name), stats=_stats)
                      for name in self.names}
        self.bytes = 0

    def close(self) -> None:
        for g in self.nodes.values():
            g.manifest.close()

    def round(self) -> None:
        """Every node exchanges with ``fanout`` random peers; merges wait for the round's end."""
        kept: list[tuple[str, str, dict[str, Any], dict[str, Any], Any]] = []
        for name, g in self.nodes.items():
            peers = self.rng.sample([p for p in self.names if p != name], self.fanout)
            for peer in peers:
                request, n1 = wire(g.request(peer))
                answer, n2 = wire(self.nodes[peer].answer(request))
                delta = g.follow_up(peer, answer)
                self.bytes += n1 + n2
                kept.append((name, peer, request, answer, delta and wire(delta)))
        for name, peer, request, answer, delta in kept:
            g = self.nodes[name]
            g.absorb(peer, request, answer)
            if delta is not None:
                body, n3 = delta
                reply, n4 = wire(self.nodes[peer].take_delta(body))
                g.acknowledge(peer, answer, reply)
                self.bytes += n3 + n4

    def knows(self, data_type: str, path: str) -> int:
        return sum(1 for g in self.nodes.values() if g.manifest.get_artifact(data_type, path))

    def settle(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.round()

    def spread(self, trial: int) -> int:
        """Rounds until every node knows a new artifact of a random node."""
        origin = self.rng.choice(self.names)
        m = self.nodes[origin].manifest
        art = Artifact("npz", f"sim/t{trial}.npz", "sim", 1 << 20, f"{trial:064x}",
                       time.time(), origin, 1 << 20, time.time_ns())
        m.upsert_artifact(art)
        m.set_replica(Replica("npz", art.path, origin, art.sha256, time.time()))
        for r in range(1, MAX_ROUNDS + 1):
            self.round()
            if self.knows("npz", art.path) == len(self.names):
                return r
        raise RuntimeError(f"not converged after {MAX_ROUNDS} rounds")

    def quiet(self) -> None:
        """Rounds until nothing changes any more (every row everywhere, echoes settled)."""
        for _ in range(MAX_ROUNDS):
            seqs = [g.manifest.seq for g in self.nodes.values()]
            self.round()
            if seqs == [g.manifest.seq for g in self.nodes.values()]:
                return
        raise RuntimeError(f"not quiet after {MAX_ROUNDS} rounds")

    def pair(self, a: str, b: str) -> None:
        """One full exchange, ``a`` asking ``b``, merged at once."""
        request, _ = wire(self.nodes[a].request(b))
        answer, _ = wire(self.nodes[b].answer(request))
        self.nodes[a].absorb(b, request, answer)
        delta = self.nodes[a].follow_up(b, answer)
        if delta is not None:
            reply, _ = wire(self.nodes[b].take_delta(wire(delta)[0]))
            self.nodes[a].acknowledge(b, answer, reply)

    def idle_exchange(self) -> tuple[int, int, bool]:
        """(request bytes, answer bytes, follow-up needed) of one exchange of two synced nodes:
        a quiet cluster, and the two have exchanged both ways since it went quiet."""
        a, b = self.names[0], self.names[1]
        self.quiet()
        self.pair(a, b)
        self.pair(b, a)
        request, n1 = wire(self.nodes[a].request(b))
        answer, n2 = wire(self.nodes[b].answer(request))
        return n1, n2, self.nodes[a].follow_up(b, answer) is not None


def _stats() -> dict[str, Any]:
    return {"disk_percent": 41.27, "backpressure": None}


def run(n: int, fanout: int, trials: int, seed: int) -> dict[str, Any]:
    """``trials`` spreads, each on a fresh warmed-up cluster (independent trials)."""
    rng = random.Random(seed * 1000 + n * 10 + fanout)
    started = time.monotonic()
    rounds, sent = [], []
    for trial in range(trials):
        cluster = SimCluster(n, fanout, rng)
        try:
            cluster.settle()
            before = cluster.bytes
            rounds.append(cluster.spread(trial))
            sent.append(cluster.bytes - before)
        finally:
            cluster.close()
    return {"nodes": n, "fanout": fanout, "trials": trials,
            "median_rounds": statistics.median(rounds), "max_rounds": max(rounds),
            "target": round(math.log2(n) + math.log(n), 1), "rounds": rounds,
            "bytes_per_trial": round(statistics.mean(sent)),
            "seconds": round(time.monotonic() - started, 1)}


def idle_exchange(seed: int) -> tuple[int, int, bool]:
    """An idle exchange in a quiet 32-node cluster after a few artifacts spread."""
    cluster = SimCluster(32, AutoSync().gossip_fanout, random.Random(seed))
    try:
        cluster.settle()
        for trial in range(3):
            cluster.spread(trial)
        return cluster.idle_exchange()
    finally:
        cluster.close()


def main() -> int:
    default_k = AutoSync().gossip_fanout
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--fanout", type=int, nargs="+", default=sorted({default_k, 1},
                                                                         reverse=True))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    results = [run(n, k, args.trials, args.seed) for n in args.nodes for k in args.fanout]
    if args.json:
        print(json.dumps({"spread": results, "idle": idle_exchange(args.seed)}, indent=2))
        return 0
    print(f"gossip spread, synchronous rounds, {args.trials} trials each"
          f" (config default fanout {default_k})")
    print(f"{'N':>5} {'k':>3} {'median':>7} {'max':>5} {'target':>7} {'KB/spread':>10} {'s':>6}")
    for r in results:
        print(f"{r['nodes']:>5} {r['fanout']:>3} {r['median_rounds']:>7} {r['max_rounds']:>5}"
              f" {r['target']:>7} {r['bytes_per_trial'] / 1000:>10.1f} {r['seconds']:>6}")
    idle = idle_exchange(args.seed)
    body = idle[0] + idle[1]
    headers = len(REQUEST_HEADERS) + len(RESPONSE_HEADERS)
    print(f"idle exchange between two synced nodes: request {idle[0]} B + answer {idle[1]} B"
          f" = {body} B of JSON (target < 1024), follow-up: {'yes' if idle[2] else 'none'};"
          f" with HTTP/1.1 headers ~{body + headers} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
