"""A headless node says what is wrong: in its log (rate-limited) and in /health.

gpu-1 runs alone: its coordinator, the one place it pushes to, never comes up. Before
this, it logged only "serving on ..." while every push failed and its breaker opened,
and /health stayed healthy.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import write

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

CONFIG = {"transfer": {"retry_base_seconds": 0.2, "retry_max_seconds": 0.5,
                       "breaker_reset_seconds": 0.5}}


def health(cluster: Cluster, name: str) -> dict:
    url = f"http://127.0.0.1:{cluster.nodes[name].port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 when unhealthy
        return json.loads(exc.read())


def test_nowhere_to_push_is_unhealthy_logged_once_a_window_and_sigterm_says_why(
        make_cluster) -> None:
    cluster = make_cluster(gpus=1, skip=("coord",), config=CONFIG)
    for i in range(5):
        write(cluster, "gpu-1", f"npz/k/f{i}.npz", os.urandom(2000))
    started = time.monotonic()
    answer = wait_for(lambda: (h := health(cluster, "gpu-1")) and not h["is_healthy"] and h,
                      10, what="/health to turn unhealthy")
    assert time.monotonic() - started < 2 * 0.5 + 3  # two intervals (0.5 s), and start-up
    auto_sync = answer["details"]["auto_sync"]
    assert not auto_sync["is_healthy"] and "nowhere to push" in auto_sync["message"], auto_sync
    assert auto_sync["details"]["stuck_since"] is not None

    time.sleep(3)  # many failed pushes, many breaker changes: still a few lines
    text = cluster.log("gpu-1")
    failed_lines = [ln for ln in text.splitlines() if "WARNING" in ln and "DATA_SYNC_FAILED" in ln]
    failed_events = cluster.events("gpu-1", "DATA_SYNC_FAILED")
    assert failed_lines and len(failed_events) > 3 * len(failed_lines), \
        (len(failed_lines), len(failed_events))
    assert "target=coord" in failed_lines[0]
    assert any("CIRCUIT_BREAKER_CHANGED" in ln for ln in text.splitlines())
    assert any("unhealthy" in ln and "auto_sync" in ln and "WARNING" in ln
               for ln in text.splitlines()), text[-3000:]

    cluster.stop_node("gpu-1", signal.SIGTERM)
    assert "stopping: waiting for" in cluster.log("gpu-1")
