"""One bandwidth budget for rsync too: its bytes are drawn from the node's per-host bucket.

rsync's own ``--bwlimit`` is per process (concurrent rsyncs do not share it) and bursty.
Instead, rsync's ``-e`` program is this module, which runs the real ``ssh`` and relays rsync's
bytes to it; before each ``chunk`` bytes it sends, it asks the node (``MeterServer``, a unix
socket) for them, and the node answers once its ``BandwidthCoordinator`` allocation for that
transfer has drawn them from the target host's bucket, the same bucket HTTP pushes draw from
in the same chunk size (so the bucket's FIFO turns share the host's limit fairly between
them). What rsync receives back (its acknowledgements, checksums) is relayed unmetered.

    rsync -e "python -I -S …/engine/transport/meter.py SOCKET TOKEN CHUNK -- ssh -o … " …

The relay runs as a script by its path (``meter_script()``), not as a module of the
package: it imports only the standard library, so it starts in a tenth of a second.

Protocol on the socket: the relay sends ``TOKEN\\n``; then each 1-byte request ``+`` is
answered with ``+`` once ``CHUNK`` bytes were drawn (or ``!`` and the connection closed when
the token is unknown or the transfer is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


class MeterServer:
    """The node's side: a unix socket where relays draw bytes from allocations."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path = path
        self.chunk = chunk
        self._allocations: dict[str, Any] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def admit(self, allocation: Any):
        """A token a relay may draw ``allocation``'s bytes with, while the context lasts."""
        token = secrets.token_hex(16)
        self._allocations[token] = allocation
        try:
            yield token
        finally:
            self._allocations.pop(token, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            token = (await reader.readline()).decode(errors="replace").strip()
            while await reader.read(1) == b"+":
                allocation = self._allocations.get(token)
                if allocation is None:
                    writer.write(b"!")
                    break
                await allocation.consume(self.chunk)
                writer.write(b"+")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def meter_script() -> str:
    """The path the relay is run by (this file)."""
    return str(Path(__file__).resolve())


def relay(sock_path: str, token: str, chunk: int, ssh_argv: list[str]) -> int:
    """The ``-e`` program: run ``ssh_argv``, pass rsync's stdin to it chunk by metered chunk
    and its stdout back; exit with ssh's exit code."""
    meter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    meter.connect(sock_path)
    meter.sendall(token.encode() + b"\n")
    proc = subprocess.Popen(ssh_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None

    def back() -> None:  # ssh -> rsync, unmetered; ssh's end is the relay's end
        out = proc.stdout
        while data := out.read(65536):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
        # rsync waits for its -e program without closing the pipe into it first (plain ssh
        # exits when the remote command does): so exit as soon as ssh has
        os._exit(proc.wait())

    thread = threading.Thread(target=back, daemon=True)
    thread.start()
    credit = 0
    meter.sendall(b"+")  # one grant always asked ahead: it waits its turn while bytes move
    try:
        while data := os.read(0, chunk):
            while credit < len(data):
                meter.sendall(b"+")
                if meter.recv(1) != b"+":
                    raise OSError("the node refused this transfer's bytes")
                credit += chunk
            credit -= len(data)
            proc.stdin.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        meter.close()
    code = proc.wait()
    thread.join(5)
    return code


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print("usage: python meter.py SOCKET TOKEN CHUNK -- ssh …",
              file=sys.stderr)
        return 2
    return relay(argv[0], argv[1], int(argv[2]), argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
