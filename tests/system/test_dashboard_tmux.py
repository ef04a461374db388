"""End to end: ``ringsync demo`` in a real terminal (tmux), driven by keys, read off the screen.

The demo runs the shipped cluster (on free ports) with the coordinator embedded in the
dashboard. The test presses keys with ``send-keys`` and reads the screen with
``capture-pane``, like an operator would; at the end ``q`` quits, the demo drains and
prints its summary, and nothing generated is missing.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.demo import REPO, demo_env, local_config_on_free_ports

pytestmark = [pytest.mark.system, pytest.mark.timeout(150)]


class Tmux:
    """One detached tmux session on a private server socket, 80x24 by default: the size an
    operator's terminal often is, and the size CI's terminal drew the dashboard at."""

    def __init__(self, tmp_path: Path, command: list[str], width: int = 80,
                 height: int = 24) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self.name = f"rs-{uuid.uuid4().hex[:8]}"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in
                       {"PYTHONPATH": str(REPO), "TERM": "xterm-256color"}.items())
        self._run("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                  f"cd {shlex.quote(str(tmp_path))} && env {env} {shlex.join(command)};"
                  " echo RINGSYNC-EXIT=$?; sleep 60")

    def _run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                             text=True, timeout=10, env=demo_env())
        assert out.returncode == 0, out.stderr
        return out.stdout

    def keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-J", "-S", "-200", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 30.0, *alternatives: str) -> str:
        """Wait until ``text`` (or one of ``alternatives``) is on screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if any(t in screen for t in (text, *alternatives)):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on screen after {timeout}s:\n{screen}")
            time.sleep(0.25)

    def wait_gone(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text in (screen := self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} still on screen after {timeout}s:\n{screen}")
            time.sleep(0.25)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def tmux_demo(tmp_path: Path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: run .ci/system-deps (make test does)")
    config = local_config_on_free_ports(tmp_path)
    session = Tmux(tmp_path, [sys.executable, "-m", "ringsync_tui.cli", "demo", "--config",
                              str(config), "--workdir", str(tmp_path / "demo"), "--json"])
    try:
        yield session
    finally:
        session.kill()
        pids = tmp_path / "demo" / "pids.json"
        if pids.exists():  # the demo's own cleanup failed if any of these still runs
            for pid in [*json.loads(pids.read_text())["nodes"].values()]:
                subprocess.run(["kill", "-9", str(pid)], capture_output=True)


def test_operator_drives_the_demo_dashboard_in_a_real_terminal(tmux_demo: Tmux) -> None:
    screen = tmux_demo.wait_for("gpu-4")
    assert "coordinator" in screen
    tmux_demo.wait_for("DATA_SYNC_COMPLETED", timeout=40)  # the demo's data moves

    tmux_demo.keys("?")
    tmux_demo.wait_for("priority sync of the selected node")
    # A lone ESC is told from the start of an escape sequence by a short pause: wait for the
    # help to close before the next key, or ESC + space would arrive as alt+space.
    tmux_demo.keys("Escape")
    tmux_demo.wait_gone("priority sync of the selected node")

    tmux_demo.keys("Space")
    tmux_demo.wait_for("ALL SYNC PAUSED", 30, "ALL PAUSED")  # the header's long or short form
    tmux_demo.wait_for("SYNC_PAUSED")
    tmux_demo.keys("Space")
    tmux_demo.wait_gone("ALL PAUSED")
    tmux_demo.wait_gone("ALL SYNC PAUSED")

    # The resumed nodes' pushes scroll SYNC_RESUMED out of the events pane: filter for it.
    tmux_demo.keys("/")
    tmux_demo.wait_for("filter events:")  # the box is open: what is typed now goes into it
    tmux_demo.keys("-l", "type:resumed")
    tmux_demo.keys("Enter")
    tmux_demo.wait_for("filter: type:resumed")
    tmux_demo.wait_for("SYNC_RESUMED")
    tmux_demo.keys("Escape")
    time.sleep(0.5)  # a lone ESC needs a pause before the next key (see above)

    tmux_demo.keys("Down")  # select the top node, then open its detail screen
    tmux_demo.keys("Enter")
    tmux_demo.wait_for("Artifacts")
    tmux_demo.keys("Escape")
    tmux_demo.wait_gone("Artifacts")

    tmux_demo.keys("q")
    screen = tmux_demo.wait_for("RINGSYNC-EXIT=", timeout=60)
    assert "RINGSYNC-EXIT=0" in screen, screen
    summary = json.loads(next(line for line in screen.splitlines() if line.startswith("{")))
    assert summary["generated"] > 0 and summary["missing"] == 0
