"""Files on a node's data root, written the way generators write them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.support.cluster import Cluster


def write(cluster: Cluster, node: str, rel: str, data: bytes) -> Path:
    """Write ``<data_root>/<rel>`` under a hidden name and rename it into place (finished)."""
    path = cluster.data_root(node) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return path


def rot(path: Path) -> None:
    """Silent bit rot: flip bytes in the middle of a file, keeping its size and mtime."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        data = fh.read(16)
        fh.seek(st.st_size // 2)
        fh.write(bytes(b ^ 0xFF for b in data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
