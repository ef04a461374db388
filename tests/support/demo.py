"""Running ``ringsync demo`` from tests: on free ports, with this checkout on the path."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.support.sshd import free_ports

REPO = Path(__file__).resolve().parents[2]


def demo_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RINGRIFT_CLUSTER_TOKEN", None)
    return env


def local_config_on_free_ports(tmp_path: Path) -> Path:
    """The shipped demo cluster, moved to free ports so the test never collides with a
    demo (or another test run) already using 8770-8775."""
    data = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    for host, port in zip(data["hosts"].values(), free_ports(len(data["hosts"]))):
        host["port"] = port
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
