"""A real OpenSSH server on a free loopback port, for tests and benchmarks.

    with SshServer() as server:
        subprocess.run([*server.ssh_args(), f"{server.user}@127.0.0.1", "true"], check=True)
        subprocess.run(["rsync", "-a", "-e", server.rsync_rsh(), src,
                        f"{server.user}@127.0.0.1:{dest}/"], check=True)

Everything (host key, client key pair, authorized_keys, known_hosts, sshd_config,
pid file, sshd log) lives in a private temp dir that is removed on exit. The
server is `/usr/sbin/sshd -D -e -f <cfg>` run as a child process: as root it
needs the privilege separation directory /run/sshd (created here if missing);
as an ordinary user it can only log that same user in, which is all we need.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (the kernel may hand the same free port out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _current_user() -> str:
    # The account sshd will actually log in is the one we run as; getpass.getuser()
    # prefers $USER/$LOGNAME, which can disagree with the uid inside containers.
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # pragma: no cover - uid without a passwd entry
        import getpass

        return getpass.getuser()


class SshServer:
    """Context manager running a throwaway sshd; see module docstring."""

    def __init__(self, start_timeout: float = 10.0, port_attempts: int = 3, host: str = HOST,
                 port: int | None = None, wrap: list[str] | None = None) -> None:
        """``host``/``port``: where it listens (a free loopback port by default); ``wrap``:
        an argv prefix sshd runs under (``ip netns exec NS`` for a host in a namespace)."""
        self.start_timeout = start_timeout
        self.port_attempts = port_attempts if port is None else 1
        self.user = _current_user()
        self.host = host
        self._fixed_port = port
        self._wrap = list(wrap or [])
        self.port: int = 0
        self.dir: Path | None = None
        self.client_key: Path | None = None
        self.known_hosts: Path | None = None
        self.config: Path | None = None
        self.log: Path | None = None
        self._proc: subprocess.Popen | None = None

    # -- public helpers ----------------------------------------------------

    @property
    def target(self) -> str:
        """`user@host`, the ssh/rsync destination prefix."""
        return f"{self.user}@{self.host}"

    def ssh_args(self) -> list[str]:
        """argv prefix for the OpenSSH client; append target and command."""
        return [
            "ssh",
            "-p", str(self.port),
            "-i", str(self.client_key),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
        ]

    def rsync_rsh(self) -> str:
        """ssh_args() as one string, for `rsync -e`."""
        return shlex.join(self.ssh_args())

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "SshServer":
        if not os.path.isfile(SSHD):
            raise RuntimeError(f"{SSHD} not found; run .ci/system-deps (openssh-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="ringsync-sshd-"))
        try:
            self._ensure_privsep_dir()
            self._make_keys()
            last_error = ""
            for _ in range(self.port_attempts):
                self.port = self._fixed_port or free_port()
                self._write_config()
                error = self._launch_and_wait()
                if error is None:
                    return self
                last_error = error
                self._terminate()
                if "Address already in use" not in error:
                    break  # not a port race: retrying won't help
            raise RuntimeError(f"sshd did not come up on {self.host}:{self.port}: {last_error}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._terminate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------

    def _ensure_privsep_dir(self) -> None:
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _keygen(self, path: Path) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ringsync-test", "-f", str(path)],
            check=True, timeout=30, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def _make_keys(self) -> None:
        assert self.dir is not None
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_ed25519"
        self._keygen(self.host_key)
        self._keygen(self.client_key)
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.known_hosts = self.dir / "known_hosts"
        self.log = self.dir / "sshd.log"

    def _write_config(self) -> None:
        assert self.dir is not None
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        # Non-default port: known_hosts names the host as [host]:PORT.
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        self.known_hosts.write_text(f"{name} {host_pub[0]} {host_pub[1]}\n")
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "PrintMotd no",
                    # tests and benchmarks open many connections at once
                    "MaxStartups 100:30:200",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )

    def _launch_and_wait(self) -> str | None:
        """Start sshd; None once `ssh true` works, else an error description."""
        assert self.log is not None
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                [*self._wrap, SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # keep terminal signals (Ctrl-C) for us to handle
            )
        deadline = time.monotonic() + self.start_timeout
        last = "timed out"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"sshd exited with {self._proc.returncode}: {self._log_text()}"
            if self._port_accepts():
                try:
                    r = subprocess.run(
                        [*self.ssh_args(), self.target, "true"],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True,
                        timeout=max(1.0, deadline - time.monotonic()),
                    )
                except subprocess.TimeoutExpired:
                    last = "`ssh true` timed out"
                    break
                if r.returncode == 0:
                    return None
                last = f"`ssh true` exited {r.returncode}: {r.stderr.strip()}"
            time.sleep(0.05)
        return f"{last} (after {self.start_timeout:.0f} s); sshd log: {self._log_text()}"

    def _port_accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace").strip() or "(empty)"
        except (OSError, AttributeError):
            return "(no log)"

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
