"""Baseline: how fast does plain rsync move one big file over OpenSSH on loopback?

    .venv/bin/python bench/rsync_baseline.py [--size-mib 1024] [--tmpdir DIR]

Prints seconds per GiB for `rsync -a -e ssh` (whole file, fresh destination)
and, for comparison, for one SHA-256 pass over the same file: the floor any
verified transfer has to pay on this machine. A figure, not an assertion.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.sshd import SshServer  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB


def rsync_over_ssh_seconds(src: Path, dest_dir: Path) -> float:
    """Seconds for `rsync -a -e <ssh> src user@127.0.0.1:dest_dir/` (sshd start-up excluded)."""
    with SshServer() as server:
        return rsync_to_server_seconds(server, src, dest_dir)


def rsync_to_server_seconds(server: SshServer, src: Path, dest_dir: Path) -> float:
    """Seconds for `rsync -a -e <ssh> src user@host:dest_dir/` to ``server`` (already up)."""
    src, dest_dir = Path(src).resolve(), Path(dest_dir).resolve()
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["rsync", "-a", "-e", server.rsync_rsh(), str(src), f"{server.target}:{dest_dir}/"]
    started = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=3600)
    elapsed = time.perf_counter() - started
    if r.returncode != 0:
        raise RuntimeError(f"rsync exited {r.returncode}: {r.stderr.strip()}")
    return elapsed


def sha256_pass_seconds(path: Path) -> float:
    """Seconds for one hashlib.sha256 pass over `path` in 1 MiB chunks."""
    h = hashlib.sha256()
    started = time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    h.hexdigest()
    return time.perf_counter() - started


def write_random_file(path: Path, size_mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
        f.flush()
        os.fsync(f.fileno())


def per_gib(seconds: float, size_bytes: int) -> float:
    return seconds * GIB / size_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")

    work = Path(tempfile.mkdtemp(prefix="ringsync-bench-", dir=args.tmpdir))
    try:
        src = work / "src" / "blob.bin"
        src.parent.mkdir()
        write_random_file(src, args.size_mib)
        size = src.stat().st_size

        hash_s = sha256_pass_seconds(src)
        rsync_s = rsync_over_ssh_seconds(src, work / "dst")
        if (work / "dst" / src.name).stat().st_size != size:
            raise RuntimeError("destination size differs from source")

        print(f"rsync over ssh: {per_gib(rsync_s, size):.2f} s/GiB "
              f"({args.size_mib} MiB in {rsync_s:.2f} s)")
        print(f"sha256 one pass: {per_gib(hash_s, size):.2f} s/GiB "
              f"({args.size_mib} MiB in {hash_s:.2f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
