"""``ringsync demo`` end to end: real engine and generator processes, nothing lost, nothing left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.demo import demo_env, local_config_on_free_ports

pytestmark = pytest.mark.cluster

KEYS = {"generated", "verified_on_coordinator", "missing", "bytes_moved", "failed_transfers",
        "deleted", "min_verified_copies", "pressure", "duration_seconds", "nodes", "per_node",
        "events"}


def _demo(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ringsync_tui.cli", "demo", *args],
                          cwd=tmp_path, env=demo_env(), capture_output=True, text=True,
                          timeout=timeout)


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    return state != "Z"


@pytest.mark.timeout(240)
def test_headless_demo_moves_everything_and_leaves_nothing_running(tmp_path: Path) -> None:
    """Long enough (70 s) for every GPU node to pass 50/70/75 % and delete behind copies."""
    workdir = tmp_path / "demo"
    config = local_config_on_free_ports(tmp_path)
    result = _demo(tmp_path, "--config", str(config), "--headless", "--duration", "70", "--json",
                   "--workdir", str(workdir), "--fresh", timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert KEYS <= set(summary), summary
    assert summary["missing"] == 0, summary
    assert summary["generated"] > 0 and summary["verified_on_coordinator"] > 0, summary
    assert summary["failed_transfers"] >= 0 and summary["bytes_moved"] > 0, summary
    assert summary["nodes"] == 6
    assert summary["pressure"] == dict.fromkeys(("gpu-1", "gpu-2", "gpu-3", "gpu-4"), "cleanup")
    assert summary["deleted"] > 0 and summary["min_verified_copies"] >= 2, summary
    gpus = {n for n, row in summary["per_node"].items() if row["generated"]}
    assert gpus == {"gpu-1", "gpu-2", "gpu-3", "gpu-4"}

    # the nodes ran with the effective config: absolute data roots inside the workdir
    cluster = yaml.safe_load((workdir / "cluster.yaml").read_text())
    for host in cluster["hosts"].values():
        assert Path(host["data_root"]).is_absolute()
        assert Path(host["data_root"]).is_relative_to(workdir)
    assert (workdir / "nodes" / "coordinator" / ".ringsync" / "events.jsonl").exists()

    pids = json.loads((workdir / "pids.json").read_text())
    started = [*pids["nodes"].values(), *pids["generators"].values()]
    assert len(pids["nodes"]) == 6 and len(pids["generators"]) == 4
    assert [pid for pid in started if _alive(pid)] == []


def test_broken_config_exits_2_with_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump({
        "token": "t",
        "hosts": {"coord": {"role": "coordinator", "provider": "local", "port": 18770,
                            "data_root": "nodes/coord"},
                  "gpu-1": {"role": "gpu", "provider": "lambda", "port": 18770,
                            "data_root": "nodes/gpu-1"}}}))
    result = _demo(tmp_path, "--config", str(bad), "--headless", "--duration", "5", "--json",
                   "--workdir", str(tmp_path / "demo"), timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ringsync: config error: ") and str(bad) in lines[0]
    assert "already used" in lines[0]
    assert not (tmp_path / "demo").exists()
