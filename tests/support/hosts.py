"""A cluster of real hosts: every node its own process in its own network namespace.

``HostsCluster`` is ``Cluster`` (tests/support/cluster.py) with each node in a namespace of
a ``Network`` (tests/support/netns.py): its own address on a private bridge, the default
port 8770 like every real node, and a link shaped with tbf to its provider's bandwidth
(the engine's limit for it, ``bandwidth_limit_mbps``, unless ``links`` says otherwise).
The config is the operator's schema, an address per host; the engine has no test path.

    cluster = HostsCluster(tmp, gpus=2, links={"gpu-1": 10})
    cluster.start()
    cluster.net.partition("gpu-1")          # faults: see Network
    cluster.net.heal("gpu-1")
    cluster.start_sshd("gpu-1")             # a real sshd on its address, port 22
    cluster.stop_all()                      # processes, sshds, then every namespace

``stop_all`` raises if anything the network made is left behind. Importable by bench/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster
from tests.support.netns import Network
from tests.support.sshd import SshServer

PORT = 8770
"""Every node's HTTP port: each has an address of its own, as on real hosts."""


class HostsCluster(Cluster):
    """``Cluster`` in network namespaces (see the module docstring)."""

    def __init__(self, root: Path, *, links: dict[str, float | None] | None = None,
                 ssh: bool = False, **kwargs: Any) -> None:
        """``links``: MB/s per node name (None: unshaped); the rest as ``Cluster``.
        ``ssh``: each host's config names its sshd (``start_sshd`` starts it)."""
        self.net: Network | None = None
        self._links = dict(links or {})
        self._ssh = ssh
        self.sshd: dict[str, SshServer] = {}
        """Running sshds by node name."""
        super().__init__(root, **kwargs)
        if ssh:
            import yaml

            for node in self.nodes.values():
                self.settings["hosts"][node.name]["ssh"] = {
                    "host": node.address, "port": 22, "user": "root"}
            self.config_path.write_text(yaml.safe_dump(self.settings, sort_keys=False))

    def endpoints(self, names: list[str]) -> list[tuple[str, int]]:
        self.net = Network(names).create()
        return [(self.net.address(name), PORT) for name in names]

    def command(self, name: str) -> list[str]:
        assert self.net is not None
        return self.net.wrap(name, super().command(name))

    def start(self, skip: tuple[str, ...] = ()) -> None:
        self.shape_links()
        super().start(skip)

    def shape_links(self) -> None:
        """Shape every link: ``links`` where given, else the engine's limit for the host."""
        from engine.config import load_config

        config = load_config(self.config_path)
        assert self.net is not None
        for name in self.nodes:
            rate = self._links[name] if name in self._links else config.bandwidth_limit_mbps(name)
            self.net.shape(name, rate)

    def start_sshd(self, name: str) -> SshServer:
        """A real OpenSSH server in ``name``'s namespace, on its address, port 22."""
        assert self.net is not None
        server = SshServer(host=self.nodes[name].address, port=22,
                           wrap=self.net.wrap(name, [])).start()
        self.sshd[name] = server
        return server

    def stop_all(self) -> None:
        try:
            super().stop_all()
        finally:
            for server in self.sshd.values():
                server.stop()
            self.sshd.clear()
            if self.net is not None:
                self.net.destroy()
                left = self.net.leftovers()
                if left:
                    raise AssertionError(f"network namespaces or links left behind: {left}")
