"""Real rsync over a real OpenSSH server on a loopback port.

These tests must fail (not skip) when rsync or sshd are missing or broken:
the transports in engine/transport depend on exactly this working.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.sshd import SshServer

pytestmark = pytest.mark.system

SIZE = 5 * 1024 * 1024
TIMEOUT = 60  # seconds, for every subprocess


@pytest.fixture(scope="module")
def sshd():
    with SshServer() as server:
        yield server


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: Path, size: int = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def rsync(sshd: SshServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["rsync", "-e", sshd.rsync_rsh(), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
    )


def bytes_sent(stats: str) -> int:
    m = re.search(r"Total bytes sent:\s*([\d,.]+)", stats)
    assert m, stats
    return int(re.sub(r"[,.]", "", m.group(1)))


def test_ssh_login_with_pinned_host_key(sshd, tmp_path):
    r = subprocess.run(
        [*sshd.ssh_args(), sshd.target, "echo", "hello"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello"

    # StrictHostKeyChecking is real: an empty known_hosts must be refused.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    args = [a.replace(str(sshd.known_hosts), str(empty)) for a in sshd.ssh_args()]
    r = subprocess.run(
        [*args, sshd.target, "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert r.returncode != 0
    assert "Host key verification failed" in r.stderr


def test_rsync_copies_file_intact(sshd, tmp_path):
    src = random_file(tmp_path / "src" / "blob.bin")
    dst = tmp_path / "dst"
    dst.mkdir()

    r = rsync(sshd, "-a", "--partial", str(src), f"{sshd.target}:{dst}/")

    assert r.returncode == 0, r.stderr
    assert (dst / "blob.bin").stat().st_size == SIZE
    assert sha256(dst / "blob.bin") == sha256(src)


def test_append_verify_sends_only_the_missing_tail(sshd, tmp_path):
    src = random_file(tmp_path / "src" / "blob.bin")
    dst = tmp_path / "dst"
    dst.mkdir()
    have = 3 * 1024 * 1024
    (dst / "blob.bin").write_bytes(src.read_bytes()[:have])

    r = rsync(sshd, "-a", "--partial", "--append-verify", "--stats",
              str(src), f"{sshd.target}:{dst}/")

    assert r.returncode == 0, r.stderr
    assert sha256(dst / "blob.bin") == sha256(src)
    sent = bytes_sent(r.stdout)
    assert sent < SIZE - have + 256 * 1024, f"resent too much: {sent} bytes"


def test_append_verify_repairs_a_corrupt_partial(sshd, tmp_path):
    # A partial whose prefix does not match the source must not survive:
    # --append-verify checks the whole file and redoes the transfer.
    src = random_file(tmp_path / "src" / "blob.bin")
    dst = tmp_path / "dst"
    dst.mkdir()
    prefix = bytearray(src.read_bytes()[: 2 * 1024 * 1024])
    prefix[1000] ^= 0xFF
    (dst / "blob.bin").write_bytes(bytes(prefix))

    r = rsync(sshd, "-a", "--partial", "--append-verify", str(src), f"{sshd.target}:{dst}/")

    assert r.returncode == 0, r.stderr
    assert sha256(dst / "blob.bin") == sha256(src)


def test_interrupted_transfer_keeps_partial_and_resumes(sshd, tmp_path):
    src = random_file(tmp_path / "src" / "blob.bin")
    dst = tmp_path / "dst"
    dst.mkdir()
    final = dst / "blob.bin"

    # Throttle to ~1 MiB/s so there is time to interrupt mid-file.
    proc = subprocess.Popen(
        ["rsync", "-a", "--partial", "--bwlimit=1024", "-e", sshd.rsync_rsh(),
         str(src), f"{sshd.target}:{dst}/"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            tmp = [p for p in dst.iterdir() if p.name.startswith(".blob.bin.")]
            if tmp and tmp[0].stat().st_size >= 512 * 1024:
                break
            assert proc.poll() is None, f"rsync ended early: {proc.communicate()}"
            time.sleep(0.05)
        else:
            pytest.fail("no partial data arrived")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0, "transfer finished before it was interrupted"

    # The remote receiver notices the dropped connection and, with --partial,
    # moves what it got to the final name; give it a moment to do so.
    deadline = time.monotonic() + 10
    while not final.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert final.exists(), f"--partial kept nothing: {sorted(p.name for p in dst.iterdir())}"
    kept = final.stat().st_size
    assert 0 < kept < SIZE
    assert final.read_bytes() == src.read_bytes()[:kept]

    r = rsync(sshd, "-a", "--partial", "--append-verify", "--stats",
              str(src), f"{sshd.target}:{dst}/")

    assert r.returncode == 0, r.stderr
    assert sha256(final) == sha256(src)
    assert bytes_sent(r.stdout) < SIZE - kept + 256 * 1024
