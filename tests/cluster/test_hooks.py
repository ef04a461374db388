"""Event hooks on a real cluster: an export hook, a failing hook and a slow one.

Every node reads the same config, so the hooks run on every node for the events emitted
there (the sender's DATA_SYNC_COMPLETED runs them on its own source file); the test looks
at the coordinator's.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.cluster import wait_for
from tests.support.files import write
from tests.support.procs import alive

pytestmark = pytest.mark.cluster

EXPORT = """\
import sys
path, config_key, out = sys.argv[1:4]
with open(out, "a") as fh:
    fh.write(f"{path} {config_key}\\n")
"""
FAILING = f"""\
#!{sys.executable}
import sys
sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: export service unavailable\\n")
sys.exit(3)
"""
SLOW = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"




def copy_name(stem: str, body: bytes) -> str:
    """Where the coordinator stores gpu-1's ``npz/hex8_2p/<stem>.npz`` of these bytes."""
    return f"npz/@gpu-1/hex8_2p/{stem}.v{hashlib.sha256(body).hexdigest()[:16]}.npz"


def test_hooks_export_report_failures_and_never_hold_up_syncing(make_cluster,
                                                                tmp_path: Path) -> None:
    export, failing = tmp_path / "export.py", tmp_path / "fail_hook.py"
    export.write_text(EXPORT)
    failing.write_text(FAILING)
    failing.chmod(0o755)
    out = tmp_path / "exports"
    out.mkdir()
    hooks = [
        {"event": "DATA_SYNC_COMPLETED", "data_types": ["games", "npz"],
         "command": [sys.executable, str(export), "{path}", "{config_key}",
                     str(out / "{node}.txt")], "timeout_seconds": 30},
        {"event": "DATA_SYNC_COMPLETED", "data_types": ["npz"], "command": [str(failing)]},
        {"event": "DATA_SYNC_COMPLETED", "data_types": ["models"],
         "command": [sys.executable, "-c", SLOW, str(tmp_path / "slow-{node}.pid")],
         "timeout_seconds": 120},
    ]
    cluster = make_cluster(gpus=1, config={"hooks": hooks})
    coord = cluster.data_root("coord").resolve()

    def exported(node: str) -> list[str]:
        path = out / f"{node}.txt"
        return path.read_text().splitlines() if path.exists() else []

    # The export hook runs on the coordinator with its stored copy and the config key.
    first_body = os.urandom(20_000)
    write(cluster, "gpu-1", "npz/hex8_2p/gpu-1_0.npz", first_body)
    first = f"{coord / copy_name('gpu-1_0', first_body)} hex8_2p"  # its stored copy's path
    wait_for(lambda: first in exported("coord"), 15, what="the coordinator's export")
    source = cluster.data_root("gpu-1").resolve() / "npz/hex8_2p/gpu-1_0.npz"
    wait_for(lambda: f"{source} hex8_2p" in exported("gpu-1"), 10, what="the sender's export")

    # The hook that always fails is a HOOK_FAILED event, with its exit code and stderr.
    failed = wait_for(lambda: cluster.events("coord", "HOOK_FAILED"), 10, what="HOOK_FAILED")
    payload = failed[0]["payload"]
    assert payload["hook"] == "fail_hook.py" and payload["node"] == "coord"
    assert payload["event"] == "DATA_SYNC_COMPLETED"
    assert payload["artifact"] == "npz/hex8_2p/gpu-1_0.npz" and payload["exit_code"] == 3
    assert payload["error"].endswith("RuntimeError: export service unavailable")

    # A hook that sleeps 60 s holds one worker; syncing and the other hooks go on.
    write(cluster, "gpu-1", "models/m/ckpt.pt", os.urandom(10_000))
    slow_pid = tmp_path / "slow-coord.pid"
    wait_for(lambda: slow_pid.exists() and slow_pid.read_text(), 15, what="the slow hook")
    began = time.monotonic()
    second_body = os.urandom(20_000)
    write(cluster, "gpu-1", "npz/hex8_2p/gpu-1_1.npz", second_body)
    wait_for((coord / copy_name("gpu-1_1", second_body)).exists, 5, what="the next file to sync")
    assert time.monotonic() - began < 5
    second = f"{coord / copy_name('gpu-1_1', second_body)} hex8_2p"
    wait_for(lambda: second in exported("coord"), 5, what="the export of the next file")
    hooks_status = wait_for(lambda: (s := cluster.status("coord")["hooks"])["failed"] >= 2 and s,
                            5, what="the second failure")
    assert hooks_status["running"] == 1 and hooks_status["dropped"] == 0

    # Stopping the node kills the hook still running: nothing outlives it.
    pid = int(slow_pid.read_text())
    assert alive(pid)
    cluster.stop_all()
    wait_for(lambda: not alive(pid), 5, what="the slow hook to be killed")
