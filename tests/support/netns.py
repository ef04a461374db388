"""A private network of Linux network namespaces: one per host, a bridge, shaped links, faults.

    with Network(["coord", "gpu-1"]) as net:
        net.shape("gpu-1", 10.0)               # its link: 10 MB/s each way (tbf)
        subprocess.run(net.wrap("gpu-1", ["python3", "-m", "http.server"]))
        net.partition("gpu-1")                 # cut it off; heal() puts it back
        net.loss("gpu-1", 2)                   # 2 % of its packets dropped, each direction
        net.block_port("gpu-1", 8770)          # its HTTP port unreachable, SSH still open

This is how Mininet emulates a network: each host is a namespace with one veth
whose other end is on a bridge in the root namespace. The bridge carries the
harness's own address (``.1``), so a test process can talk to every host; no
namespace gets a default route, and nothing is routed, NATed or forwarded to
anything outside the /24 the harness picked (one that no interface here uses).

Links are shaped with tbf on both ends of the veth (the host's egress is its
upload, the bridge end's egress its download). Faults are nftables rules in a
table of the host's own namespace (``inet ringsync_faults``), rewritten whole on
every change, so a fault never depends on an earlier one. netem is not in this
kernel, so there is no delay: loss is ``numgen random`` drops.

Everything created is recorded under ``/run/ringsync-netns/<prefix>`` with the
owner's pid; ``sweep()`` removes what a dead owner (a SIGKILLed test run) left.
Needs root (CAP_NET_ADMIN) and ``ip``, ``tc`` and ``nft``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RECORDS = Path("/run/ringsync-netns")
TABLE = "ringsync_faults"
MB = 1_000_000


def _run(argv: Sequence[str], check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


class NetworkError(RuntimeError):
    """A namespace, link or rule could not be made or changed."""


def unavailable() -> str | None:
    """Why namespaces cannot be made here (one line), or None when they can."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (CAP_NET_ADMIN); CI runs them as root"
    missing = [b for b in ("ip", "tc", "nft") if shutil.which(b) is None]
    if missing:
        return f"network-namespace tests need {', '.join(missing)} (bash .ci/system-deps installs them)"
    probe = f"rsprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except (NetworkError, OSError) as exc:
        return f"cannot create a network namespace here: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


@dataclass
class Faults:
    """The faults on one host's link, as nftables rules in its own namespace."""

    isolated: bool = False
    """Cut off from everyone (the harness too)."""
    cut_from: set[str] = field(default_factory=set)
    """Addresses it cannot exchange packets with (a partial partition)."""
    loss_percent: float = 0.0
    """Packets dropped at random, in each direction."""
    blocked_ports: set[int] = field(default_factory=set)
    """Its TCP ports that nothing can reach (e.g. HTTP blocked, SSH open)."""

    def ruleset(self) -> str:
        """The table: every packet but loopback is counted (``seen``) before any fault, and
        the random drops of ``loss_percent`` are counted too (``lost``)."""
        inbound = ["iif lo accept", 'counter comment "seen"']
        outbound = ["oif lo accept", 'counter comment "seen"']
        if self.isolated:
            inbound.append("drop")
            outbound.append("drop")
        if self.cut_from:
            peers = ", ".join(sorted(self.cut_from))
            inbound.append(f"ip saddr {{ {peers} }} drop")
            outbound.append(f"ip daddr {{ {peers} }} drop")
        if self.blocked_ports:
            ports = ", ".join(str(p) for p in sorted(self.blocked_ports))
            inbound.append(f"tcp dport {{ {ports} }} drop")
            outbound.append(f"tcp sport {{ {ports} }} drop")
        if self.loss_percent > 0:
            per_10k = round(self.loss_percent * 100)
            inbound.append(f'numgen random mod 10000 < {per_10k} counter drop comment "lost"')
            outbound.append(f'numgen random mod 10000 < {per_10k} counter drop comment "lost"')
        body = "\n".join(
            [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
             "  chain input { type filter hook input priority 0; policy accept;",
             *(f"    {r}" for r in inbound), "  }",
             "  chain output { type filter hook output priority 0; policy accept;",
             *(f"    {r}" for r in outbound), "  }", "}", ""])
        return body


@dataclass
class Host:
    name: str
    index: int
    netns: str
    address: str
    host_if: str
    """The veth end on the bridge (root namespace)."""
    rate_mbps: float | None = None
    faults: Faults = field(default_factory=Faults)


class Network:
    """Namespaces, veths and a bridge for ``names``; ``create`` (or ``with``) makes them,
    ``destroy`` removes every one of them, also after a failed ``create``."""

    def __init__(self, names: Iterable[str], prefix: str | None = None) -> None:
        self.prefix = prefix or _free_prefix()
        """Starts every namespace, interface and record name this network makes."""
        self.bridge = f"{self.prefix}br"
        self.subnet = _free_subnet()
        base = self.subnet.network_address
        self.gateway = str(base + 1)
        """The harness's own address on the bridge (the root namespace)."""
        self.hosts: dict[str, Host] = {}
        for index, name in enumerate(names, start=1):
            if index > 250:
                raise NetworkError("at most 250 hosts per network")
            self.hosts[name] = Host(name, index, f"{self.prefix}-{name}", str(base + 10 + index),
                                    f"{self.prefix}h{index}")
        self.created = False

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> Network:
        RECORDS.mkdir(parents=True, exist_ok=True)
        self._record().write_text(json.dumps({"pid": os.getpid(), "bridge": self.bridge,
                                              "netns": [h.netns for h in self.hosts.values()]}))
        self.created = True
        try:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for host in self.hosts.values():
                self._add_host(host)
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_host(self, host: Host) -> None:
        inner = f"{self.prefix}n{host.index}"
        _run(["ip", "netns", "add", host.netns])
        _run(["ip", "link", "add", host.host_if, "type", "veth", "peer", "name", inner])
        _run(["ip", "link", "set", inner, "netns", host.netns])
        _run(["ip", "link", "set", host.host_if, "master", self.bridge, "up"])
        ns = ["ip", "-n", host.netns]
        _run([*ns, "link", "set", inner, "name", "eth0"])
        _run([*ns, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])
        _run([*ns, "link", "set", "lo", "up"])
        self._apply_faults(host)

    def destroy(self) -> None:
        """Remove every namespace, link and record this network made. Processes still
        running inside a namespace keep it alive: stop them first."""
        if not self.created:
            return
        _destroy(self.bridge, [h.netns for h in self.hosts.values()])
        self._record().unlink(missing_ok=True)
        self.created = False

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network that still exist (empty after ``destroy``)."""
        return [n for n in _netns_names() if n.startswith(f"{self.prefix}-")] + \
            [link for link in _link_names() if link.startswith(self.prefix)]

    def _record(self) -> Path:
        return RECORDS / f"{self.prefix}.json"

    # -- addressing and processes ---------------------------------------------------------------
    def address(self, name: str) -> str:
        return self.hosts[name].address

    def wrap(self, name: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``name``'s namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.hosts[name].netns, *argv]

    # -- links ----------------------------------------------------------------------------------
    def shape(self, name: str, mbps: float | None) -> None:
        """Shape ``name``'s link to ``mbps`` MB/s each way (tbf), or unshape it (None)."""
        host = self.hosts[name]
        host.rate_mbps = mbps
        for argv in (["tc"], ["ip", "netns", "exec", host.netns, "tc"]):
            dev = host.host_if if len(argv) == 1 else "eth0"
            if mbps is None:
                _run([*argv, "qdisc", "del", "dev", dev, "root"], check=False)
                continue
            rate = int(mbps * MB)
            burst = max(32 * 1024, rate // 100)  # 10 ms of the rate, at least a few packets
            _run([*argv, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate}bps",
                  "burst", str(burst), "latency", "100ms"])

    def link(self, name: str, up: bool) -> None:
        """Take ``name``'s link down (carrier lost, as when a cable or a VM's NIC goes) or up."""
        _run(["ip", "link", "set", self.hosts[name].host_if, "up" if up else "down"])

    # -- faults ---------------------------------------------------------------------------------
    def partition(self, name: str, from_: Iterable[str] | None = None) -> None:
        """Cut ``name`` off: from everyone (``from_`` None, the harness included), or only from
        the hosts in ``from_``. Packets are dropped silently, as on a real partition."""
        faults = self.hosts[name].faults
        if from_ is None:
            faults.isolated = True
        else:
            faults.cut_from |= {self.address(peer) for peer in from_}
        self._apply_faults(self.hosts[name])

    def heal(self, name: str) -> None:
        """Undo ``partition`` (loss and blocked ports stay)."""
        faults = self.hosts[name].faults
        faults.isolated, faults.cut_from = False, set()
        self._apply_faults(self.hosts[name])

    def loss(self, name: str, percent: float) -> None:
        """Drop ``percent`` % of ``name``'s packets at random, each direction (0: none).

        While loss is on, the link sends no GSO super-packets (one segment per skb), so what
        is dropped is a wire-sized packet as on a real lossy link, not 64 KB at once."""
        host = self.hosts[name]
        host.faults.loss_percent = percent
        segs = "1" if percent > 0 else "65535"
        _run(["ip", "-n", host.netns, "link", "set", "eth0", "gso_max_segs", segs])
        self._apply_faults(host)

    def block_port(self, name: str, port: int, blocked: bool = True) -> None:
        """Make TCP ``port`` on ``name`` unreachable (or reachable again)."""
        ports = self.hosts[name].faults.blocked_ports
        ports.add(port) if blocked else ports.discard(port)
        self._apply_faults(self.hosts[name])

    def counters(self, name: str) -> dict[str, int]:
        """Packets on ``name``'s link since its faults last changed, both directions:
        ``seen`` (all but loopback) and ``lost`` (dropped by ``loss``), read from nftables."""
        listing = json.loads(_run(["ip", "netns", "exec", self.hosts[name].netns, "nft", "-j",
                                   "list", "table", "inet", TABLE]))
        totals = {"seen": 0, "lost": 0}
        for item in listing.get("nftables", []):
            rule = item.get("rule")
            if rule and rule.get("comment") in totals:
                for expr in rule.get("expr", []):
                    if "counter" in expr:
                        totals[rule["comment"]] += expr["counter"]["packets"]
        return totals

    def clear(self, name: str) -> None:
        """No faults on ``name`` at all, and its link up."""
        self.hosts[name].faults = Faults()
        self._apply_faults(self.hosts[name])
        self.link(name, True)

    def _apply_faults(self, host: Host) -> None:
        _run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input=host.faults.ruleset())


def _free_prefix() -> str:
    """``rs`` and 4 hex digits that no live network, namespace or link here starts with."""
    taken = {p.stem for p in RECORDS.glob("*.json")} if RECORDS.is_dir() else set()
    names = _netns_names() + _link_names()
    for _ in range(100):
        prefix = f"rs{random.getrandbits(16):04x}"
        if prefix not in taken and not any(n.startswith(prefix) for n in names):
            return prefix
    raise NetworkError("no free name prefix")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no interface or route here overlaps."""
    used = []
    for line in _run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).splitlines():
        word = line.split()[0] if line.split() else ""
        if word and word[0].isdigit():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{random.randint(200, 207)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            return candidate
    raise NetworkError("no free /24 in 10.200.0.0/13")


def _netns_names() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"], check=False).splitlines()
            if line.strip()]


def _link_names() -> list[str]:
    return [line.split()[1].rstrip(":").split("@")[0]
            for line in _run(["ip", "-o", "link", "show"], check=False).splitlines()
            if len(line.split()) > 1]


def _destroy(bridge: str, namespaces: list[str]) -> None:
    # Delete the bridge-side veths first: that removes each pair at once, while a deleted
    # namespace's own teardown is deferred by the kernel (lingering sockets keep it alive).
    prefix = bridge[:-2]
    for link in _link_names():
        if link.startswith(f"{prefix}h"):
            _run(["ip", "link", "del", link], check=False)
    existing = set(_netns_names())
    for netns in namespaces:
        if netns in existing:
            _run(["ip", "netns", "del", netns], check=False)  # takes its veth pair with it
    if bridge in _link_names():
        _run(["ip", "link", "del", bridge], check=False)
    # a namespace's veth goes with the namespace; wait for the kernel to finish that
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            link.startswith(prefix) for link in _link_names()):
        time.sleep(0.05)


def sweep() -> list[str]:
    """Remove what networks of dead owners left (a run that was killed); returns their prefixes."""
    if not RECORDS.is_dir():
        return []
    swept = []
    for record in RECORDS.glob("*.json"):
        try:
            data = json.loads(record.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError):
            continue
        if Path(f"/proc/{pid}").exists():
            continue  # its owner is alive (perhaps this process)
        _destroy(data.get("bridge", ""), list(data.get("netns", [])))
        record.unlink(missing_ok=True)
        swept.append(record.stem)
    return swept
