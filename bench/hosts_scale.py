"""The 32-node example cluster as real hosts: every node in its own network namespace.

    sudo .venv/bin/python bench/hosts_scale.py [--duration 180] [--drain 240] [--gpus N]

Every host of config/distributed_hosts.yaml (1 coordinator, 24 GPU nodes, 7 CPU nodes) is its
own ``ringsync --engine-only`` process in its own namespace (tests/support/netns.py), with its
own address on a private bridge, the default port 8770 and its link shaped with tbf to the
bandwidth the config gives it (host > provider > default). The config is the example's, as
an operator would deploy it, except: addresses are the namespaces', data roots are under the
work directory, quotas are small (``--gpu-quota``, ``--cpu-quota``) and ssh blocks are
dropped (no transport uses them yet). Each GPU node runs the demo generator
(engine/demo/generator.py) for ``--duration`` seconds; then the generators stop and the run
waits up to ``--drain`` seconds for every artifact in their ledgers to be intact on the
coordinator.

It prints the coordinator's CPU (% of one core, over the run), RSS (now and peak), manifest
sizes (the coordinator's and the largest node's), the cluster's event rate and the data
moved, and exits non-zero when an artifact did not reach the coordinator verified or is
intact nowhere. Needs root; without it, it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from engine.config import load_config  # noqa: E402
from engine.demo.launcher import GENERATOR_ARGS  # noqa: E402
from engine.demo.summary import CoordinatorCheck, ledger_entries, read_events  # noqa: E402
from engine.demo.ledger import find_intact_copy  # noqa: E402
from tests.support.netns import Network, sweep, unavailable  # noqa: E402

PORT = 8770
TOKEN = "bench-scale-token"
EXAMPLE = REPO / "config" / "distributed_hosts.yaml"


def write_config(workdir: Path, net: Network, names: list[str], gpu_quota: str,
                 cpu_quota: str) -> Path:
    """The example config with the namespaces' addresses, local data roots, small quotas."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["token"] = TOKEN
    data["hosts"] = {name: data["hosts"][name] for name in names}
    for name, host in data["hosts"].items():
        host.pop("ssh", None)
        host["address"], host["port"] = net.address(name), PORT
        host["data_root"] = str(workdir / "nodes" / name)
        host["disk_quota"] = {"gpu": gpu_quota, "cpu": cpu_quota}.get(host["role"], "8GiB")
    known = set(names)
    routing = data.get("sync_routing", {})
    routing["priority_hosts"] = [h for h in routing.get("priority_hosts", []) if h in known]
    for policy in (routing.get("policies") or {}).values():
        for key in ("hosts", "exclude_hosts"):
            if key in policy:
                policy[key] = [h for h in policy[key] if h in known]
    path = workdir / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def get(url: str, timeout: float = 2.0) -> dict | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def manifest_bytes(root: Path) -> tuple[int, int]:
    """(database, write-ahead log) bytes of a node's manifest."""
    base = root / ".ringsync"

    def size(name: str) -> int:
        try:
            return (base / name).stat().st_size
        except OSError:
            return 0
    return size("manifest.db"), size("manifest.db-wal")


def stop(procs: dict[str, subprocess.Popen], grace: float) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of generation")
    ap.add_argument("--drain", type=float, default=240.0,
                    help="seconds to wait for every artifact to reach the coordinator")
    ap.add_argument("--gpus", type=int, default=None, help="only the first N GPU hosts")
    ap.add_argument("--cpus", type=int, default=None, help="only the first N CPU hosts")
    ap.add_argument("--gpu-quota", default="12MiB",
                    help="small: 50/70/75 %% pressure within the run")
    ap.add_argument("--cpu-quota", default="512MiB")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"hosts_scale: skipped: {why}")
        return 0
    sweep()
    example = load_config(EXAMPLE)
    coordinator = example.coordinator.name
    gpus = [h.name for h in example.hosts_by_role("gpu")][:args.gpus]
    cpus = [h.name for h in example.hosts_by_role("cpu")][:args.cpus]
    names = [coordinator, *gpus, *cpus]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ringsync-scale-"))
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    (workdir / "ledgers").mkdir(exist_ok=True)
    print(f"hosts_scale: {len(names)} hosts ({len(gpus)} gpu, {len(cpus)} cpu) in {workdir}",
          flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("RINGRIFT_CLUSTER_TOKEN", None)
    nodes: dict[str, subprocess.Popen] = {}
    generators: dict[str, subprocess.Popen] = {}
    net = Network(names).create()
    failed = False
    try:
        config_path = write_config(workdir, net, names, args.gpu_quota, args.cpu_quota)
        config = load_config(config_path)
        for name in names:
            net.shape(name, config.bandwidth_limit_mbps(name))
        started = time.monotonic()
        for name in sorted(names, key=lambda n: n == coordinator):  # the coordinator last
            argv = net.wrap(name, [sys.executable, "-m", "ringsync_tui.cli", "--engine-only",
                                   "--config", str(config_path), "--node", name])
            with open(workdir / "logs" / f"{name}.log", "ab") as log:
                nodes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               env=env, cwd=workdir)
        pending = set(names)
        while pending and time.monotonic() - started < 120:
            for name in sorted(pending):
                if nodes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited {nodes[name].returncode}; see "
                                       f"{workdir / 'logs' / (name + '.log')}")
                if _answers(net.address(name)):
                    pending.discard(name)
            time.sleep(0.5)
        if pending:
            raise RuntimeError(f"not answering after 120 s: {sorted(pending)}")
        print(f"hosts_scale: all {len(names)} nodes answer after "
              f"{time.monotonic() - started:.1f} s", flush=True)

        coord_pid = nodes[coordinator].pid
        cpu0, t0 = cpu_seconds(coord_pid), time.monotonic()
        for index, name in enumerate(gpus, start=1):
            argv = [sys.executable, "-m", "engine.demo.generator",
                    "--root", str(config.host(name).data_root), "--node", name,
                    "--ledger", str(workdir / "ledgers" / f"{name}.jsonl"),
                    "--seed", str(1000 + index), *GENERATOR_ARGS]
            with open(workdir / "logs" / f"generator-{name}.log", "ab") as log:
                generators[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                    env=env, cwd=workdir)
        samples = []
        while time.monotonic() - t0 < args.duration:
            time.sleep(10)
            rss, _ = rss_mib(coord_pid)
            samples.append((time.monotonic() - t0, cpu_seconds(coord_pid) - cpu0, rss))
            t, cpu, _ = samples[-1]
            print(f"  t={t:5.0f}s coordinator cpu={100 * cpu / t:5.1f}% rss={rss:6.1f} MiB "
                  f"ledger={len(ledger_entries(workdir / 'ledgers'))}", flush=True)
        stop(generators, 5.0)
        generated_at = time.monotonic()
        entries = ledger_entries(workdir / "ledgers")
        check = CoordinatorCheck(config.host(coordinator).data_root)
        left = check.unverified(entries)
        while left and time.monotonic() - generated_at < args.drain:
            time.sleep(5)
            left = check.unverified(left)
        drained = time.monotonic() - generated_at
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(coord_pid) - cpu0
        rss, hwm = rss_mib(coord_pid)
        status = get(f"http://{net.address(coordinator)}:{PORT}/status", timeout=10) or {}
        roots = [config.host(n).data_root for n in names]
        missing = [e for e in entries if find_intact_copy(e, roots) is None]
        events: Counter[str] = Counter()
        per_node_events: Counter[str] = Counter()
        moved = 0
        for name in names:
            for event in read_events(config.host(name).data_root):
                events[event.get("type", "?")] += 1
                per_node_events[name] += 1
                payload = event.get("payload") or {}
                if event.get("type") == "DATA_SYNC_COMPLETED" and \
                        payload.get("strategy") != "receive":
                    moved += int(payload.get("bytes") or 0)
        coord_manifest = manifest_bytes(config.host(coordinator).data_root)
        node_manifest = max((manifest_bytes(config.host(n).data_root)[0], n) for n in names
                            if n != coordinator)
        total_events = sum(events.values())
        print("hosts_scale: results", flush=True)
        print(f"  nodes                     {len(names)} ({len(gpus)} gpu generating, "
              f"{len(cpus)} cpu)")
        print(f"  generation                {args.duration:.0f} s; drained in {drained:.0f} s")
        print(f"  artifacts generated       {len(entries)}")
        print(f"  verified on coordinator   {len(entries) - len(left)}")
        print(f"  intact nowhere (lost)     {len(missing)}")
        print(f"  data moved                {moved / 2**20:.1f} MiB")
        print(f"  coordinator CPU           {100 * cpu / elapsed:.1f} % of one core "
              f"({cpu:.1f} s over {elapsed:.0f} s)")
        print(f"  coordinator RSS           {rss:.1f} MiB now, {hwm:.1f} MiB peak")
        print(f"  coordinator manifest      {coord_manifest[0] / 2**20:.2f} MiB database + "
              f"{coord_manifest[1] / 2**20:.2f} MiB WAL, artifacts "
              f"{json.dumps(status.get('artifacts', {}))}")
        print(f"  largest node manifest     {node_manifest[0] / 2**20:.2f} MiB ({node_manifest[1]})")
        print(f"  events                    {total_events} in {elapsed:.0f} s = "
              f"{total_events / elapsed:.1f}/s cluster-wide, coordinator "
              f"{per_node_events[coordinator] / elapsed:.1f}/s")
        print("  top event types           " + ", ".join(
            f"{t} {n}" for t, n in events.most_common(6)))
        for entry in left[:10]:
            print(f"  NOT ON COORDINATOR {entry.node}:{entry.data_type}/{entry.path}")
        for entry in missing[:10]:
            print(f"  LOST {entry.node}:{entry.data_type}/{entry.path}")
        failed = bool(left or missing)
    finally:
        stop(generators, 5.0)
        stop(nodes, 15.0)
        net.destroy()
        left_behind = net.leftovers()
        if left_behind:
            print(f"hosts_scale: left behind: {left_behind}")
            failed = True
    print(f"hosts_scale: {'FAILED' if failed else 'OK'} (logs in {workdir / 'logs'})")
    return 1 if failed else 0


def _answers(address: str) -> bool:
    """True when something answers HTTP on ``address``:PORT (a 503 /health is an answer)."""
    try:
        urllib.request.urlopen(f"http://{address}:{PORT}/health", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
