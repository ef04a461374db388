"""The network harness keeps its promises: nothing routed outside its own /24, everything it
made removed after a failed setup or a killed owner, faults that really drop packets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.cluster import REPO, wait_for
from tests.support.netns import Network, NetworkError, _netns_names, sweep

pytestmark = pytest.mark.hosts


def _connect(net: Network, name: str, address: str, port: int) -> str:
    """What a TCP connect from inside ``name`` to ``address:port`` does (one word)."""
    code = (f"import socket\ntry:\n    socket.create_connection(({address!r}, {port}), timeout=1.5)"
            "\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__, e.errno)")
    out = subprocess.run(net.wrap(name, [sys.executable, "-c", code]), capture_output=True,
                         text=True, timeout=20)
    return out.stdout.strip()


def _listen(net: Network, name: str, port: int) -> subprocess.Popen:
    code = (f"import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
            f" socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', {port})); s.listen(8)\n"
            "print('ready', flush=True)\nwhile True:\n    c,_=s.accept(); c.close()")
    proc = subprocess.Popen(net.wrap(name, [sys.executable, "-c", code]), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_hosts_reach_each_other_and_nothing_outside() -> None:
    with Network(["a", "b"]) as net:
        server = _listen(net, "b", 9100)
        try:
            assert _connect(net, "a", net.address("b"), 9100) == "connected"
            assert _connect(net, "a", net.gateway, 9) .startswith("ConnectionRefusedError")
            # no default route, no forwarding: an address outside the /24 is unreachable
            routes = subprocess.run(["ip", "-n", net.hosts["a"].netns, "route"],
                                    capture_output=True, text=True).stdout
            assert "default" not in routes and routes.strip(), routes
            assert _connect(net, "a", "192.0.2.2", 80).startswith("OSError 101")  # ENETUNREACH
            # faults really drop: a partition times out, a blocked port too, healing restores
            net.partition("a", from_=["b"])
            assert _connect(net, "a", net.address("b"), 9100).startswith("TimeoutError")
            net.heal("a")
            net.block_port("b", 9100)
            assert _connect(net, "a", net.address("b"), 9100).startswith("TimeoutError")
            net.clear("b")
            net.link("a", False)
            assert _connect(net, "a", net.address("b"), 9100) != "connected"
            net.link("a", True)
            wait_for(lambda: _connect(net, "a", net.address("b"), 9100) == "connected", 10,
                     what="the link back up")
        finally:
            server.kill()
            server.wait()
    assert net.leftovers() == []


def test_a_failed_setup_removes_what_it_made() -> None:
    net = Network(["a", "b"])
    subprocess.run(["ip", "netns", "add", net.hosts["b"].netns], check=True)  # b cannot be made
    try:
        with pytest.raises(NetworkError):
            net.create()
        assert net.leftovers() == [], net.leftovers()
    finally:
        subprocess.run(["ip", "netns", "del", net.hosts["b"].netns], check=False)


def test_sweep_removes_the_network_of_a_killed_owner(tmp_path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.support.netns import Network
        net = Network(["x", "y"]).create()
        print(net.prefix, flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        prefix = owner.stdout.readline().strip()
        assert prefix and any(n.startswith(f"{prefix}-") for n in _netns_names())
        assert prefix not in sweep()  # its owner is alive: left alone
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert prefix in sweep()
        assert not any(n.startswith(f"{prefix}-") for n in _netns_names())
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        sweep()
