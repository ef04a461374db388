"""The ``ringsync`` command: headless mode, bad configs, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import REPO

pytestmark = pytest.mark.cluster


def ringsync(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("RINGRIFT_CLUSTER_TOKEN", None) if env is None else None
    return subprocess.run([sys.executable, "-m", "ringsync_tui.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env=full_env)


GOOD = """\
token: t
hosts:
  coord:
    role: coordinator
    provider: hetzner
    port: {port}
    data_root: nodes/coord
"""


@pytest.mark.parametrize("text,where", [
    ("hosts: [unclosed\n", ": yaml: "),
    (GOOD.replace("port: {port}", "port: eighty"), ":6: hosts.coord.port"),
    (GOOD.replace("    provider: hetzner\n", ""), "hosts.coord.provider"),
    (GOOD + "sync_routing:\n  priority_hosts: [nobody]\n", ":9: sync_routing.priority_hosts"),
    (GOOD + "  gpu:\n    role: gpu\n    provider: vast\n    port: 9999\n    data_root: g\n",
     ":11: hosts.gpu.port"),
    (GOOD.replace("token: t", "tokn: t"), ":1: tokn"),
])
def test_bad_config_exits_nonzero_with_one_line_naming_file_line_field(
        tmp_path: Path, text: str, where: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text.replace("{port}", "9999"))
    out = ringsync("--engine-only", "--config", str(cfg), "--node", "coord", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(cfg) in lines[0] and where in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "nodes").exists(), "a bad config must change nothing"


def test_unknown_node_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(GOOD.replace("{port}", "9999"))
    out = ringsync("--engine-only", "--config", str(cfg), "--node", "ghost", cwd=tmp_path)
    assert out.returncode == 2 and "ghost" in out.stderr and len(out.stderr.splitlines()) == 1


def test_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(GOOD.replace("{port}", "9999"))
    out = ringsync("--engine-only", "--config", str(cfg), "--node", "coord", cwd=tmp_path,
                   env={"RINGRIFT_SYNC_INTERVAL": "soon"})
    assert out.returncode == 2 and "RINGRIFT_SYNC_INTERVAL" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = tmp_path / "ok.yaml"
        cfg.write_text(GOOD.replace("{port}", str(busy.getsockname()[1])).replace(
            "provider: hetzner", "provider: hetzner\n    address: 127.0.0.1"))
        out = ringsync("--engine-only", "--config", str(cfg), "--node", "coord", cwd=tmp_path)
    assert out.returncode == 1 and "cannot start node coord" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args,where", [
    (("tui", "--node", "gpu"), "the dashboard runs on the coordinator (coord); gpu is a gpu node"),
    (("tui", "--node", "ghost"), "'ghost' is not a host"),
    (("--node", "gpu"), "run it with --engine-only"),
])
def test_dashboard_refuses_a_node_that_is_not_the_coordinator(tmp_path: Path, args, where) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(GOOD.replace("{port}", "9999")
                   + "  gpu:\n    role: gpu\n    provider: vast\n    port: 9998\n    data_root: g\n")
    out = ringsync("--config", str(cfg), *args, cwd=tmp_path) if args[0] != "tui" else \
        ringsync("tui", "--config", str(cfg), *args[1:], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and str(cfg) in lines[0], out.stderr
    assert not (tmp_path / "nodes").exists() and not (tmp_path / "g").exists()


def test_dashboard_with_a_bad_config_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(GOOD.replace("port: {port}", "port: eighty"))
    out = ringsync("tui", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert ":6: hosts.coord.port" in out.stderr and "Traceback" not in out.stderr
