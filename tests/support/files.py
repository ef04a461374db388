"""Files on a node's data root, written the way generators write them."""

from __future__ import annotations

import hashlib
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


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
