"""HookRunner: real commands (the test's Python), a real EventBus with its log, a real manifest."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.config.schema import Hook
from engine.daemons.live_snapshots import LIVE_REASON as DAEMON_LIVE_REASON
from engine.events import DataSyncCompleted, Event, EventBus, EventType, SyncPaused, SyncResumed
from engine.events.hooks import LIVE_REASON, HookRunner, expand
from engine.manifest import Artifact, ClusterManifest
from engine.paths import DataRoot
from tests.support.cluster import until
from tests.support.procs import alive

pytestmark = pytest.mark.unit

PY = sys.executable
NODE = "coord"


class Env:
    """A node's data root, manifest and bus, and the runners made over them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = DataRoot(root / "node")
        self.data.create()
        self.manifest = ClusterManifest(self.data.state / "manifest.db", NODE)
        self.bus = EventBus(NODE, self.data.state / "events.jsonl")
        self.runners: list[HookRunner] = []

    async def runner(self, *hooks: dict[str, Any], **kwargs: int) -> HookRunner:
        runner = HookRunner([Hook(**h) for h in hooks], NODE, self.bus, self.data,
                            self.manifest, **kwargs)
        self.runners.append(runner)
        await runner.start()
        return runner

    def store(self, key: str, config_key: str | None = None) -> Path:
        """A file this node stores, registered in its manifest."""
        data_type, rel = key.split("/", 1)
        path = self.data.object_path(data_type, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
        self.manifest.upsert_artifact(Artifact(data_type, rel, config_key, 10, "0" * 64,
                                               time.time(), "gpu-1"))
        return path

    def completed(self, *keys: str, reason: str = "push") -> Event:
        return self.bus.emit(DataSyncCompleted(source="gpu-1", target=NODE, files=len(keys),
                                               bytes=10, artifacts=list(keys), reason=reason,
                                               strategy="receive"))

    def failures(self) -> list[dict[str, Any]]:
        return [e.payload.to_dict() for e in self.bus.recent(1000)
                if e.type == EventType.HOOK_FAILED]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    env = Env(tmp_path)
    try:
        yield env
    finally:
        for runner in env.runners:
            await runner.stop()
        env.bus.close()
        env.manifest.close()


def py(code: str, *args: str) -> list[str]:
    return [PY, "-c", code, *args]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []




async def wait(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> Any:
    return await until(predicate, timeout, what)


# ------------------------------------------------------------------------------- what it runs
def test_expand_fills_known_placeholders_once_and_leaves_other_braces() -> None:
    values = {"path": "/d/{node}", "data_type": "npz", "config_key": "k", "node": "n",
              "event": "E", "artifact": "npz/a"}
    assert expand(["{path}{path}", "{x} {1:2}", "{{node}}", "{config_key}/{artifact}"], values) \
        == ["/d/{node}/d/{node}", "{x} {1:2}", "{n}", "k/npz/a"]


def test_the_live_reason_is_the_live_snapshotters() -> None:
    assert LIVE_REASON == DAEMON_LIVE_REASON


async def test_placeholders_env_and_envelope_reach_the_command(env: Env) -> None:
    out = env.root / "out.json"
    script = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'stdin': json.load(sys.stdin),"
              " 'env': {k: v for k, v in os.environ.items() if k.startswith('RINGSYNC_')}},"
              f" open({str(out)!r}, 'w'))")
    runner = await env.runner({"event": "DATA_SYNC_COMPLETED", "data_types": ["npz"],
                               "command": py(script, "{path}", "{config_key}", "{data_type}",
                                             "{node}", "{event}", "{artifact}", "{other}")})
    path = env.store("npz/hex8_2p/a.npz", config_key="hex8_2p")
    event = env.completed("npz/hex8_2p/a.npz")
    await wait(lambda: runner.counts["succeeded"] == 1, what="the hook")
    got = json.loads(out.read_text())
    assert got["argv"] == [str(path), "hex8_2p", "npz", NODE, "DATA_SYNC_COMPLETED",
                           "npz/hex8_2p/a.npz", "{other}"]
    assert got["env"] == {"RINGSYNC_EVENT": "DATA_SYNC_COMPLETED", "RINGSYNC_NODE": NODE,
                          "RINGSYNC_ARTIFACT": "npz/hex8_2p/a.npz", "RINGSYNC_PATH": str(path),
                          "RINGSYNC_CONFIG_KEY": "hex8_2p", "RINGSYNC_DATA_TYPE": "npz"}
    assert got["stdin"] == json.loads(json.dumps(event.to_dict()))
    assert runner.status() | {"last_failure": None} == {
        "hooks": 1, "workers": 2, "runs": 1, "succeeded": 1, "failed": 0, "dropped": 0,
        "skipped": 0, "running": 0, "queued": 0, "last_failure": None}
    assert runner.health_check().is_healthy and env.failures() == []


async def test_other_events_run_once_with_empty_artifact_placeholders(env: Env) -> None:
    out = env.root / "out.txt"
    code = f"import sys; open({str(out)!r}, 'a').write(repr(sys.argv[1:]) + '\\n')"
    runner = await env.runner({"event": "SYNC_PAUSED", "data_types": ["npz"],
                               "command": py(code, "{event}", "{node}", "{path}", "{artifact}")})
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    env.bus.emit(SyncResumed(node=NODE, requested_by="test"))  # no hook for it
    await wait(lambda: runner.counts["succeeded"] == 1)
    await asyncio.sleep(0.3)
    assert lines(out) == [repr(["SYNC_PAUSED", NODE, "", ""])]
    assert runner.counts["runs"] == 1


async def test_only_wanted_types_stored_here_run_and_live_snapshots_never(env: Env) -> None:
    npz_out, all_out = env.root / "npz.txt", env.root / "all.txt"
    append = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    runner = await env.runner(
        {"event": "DATA_SYNC_COMPLETED", "data_types": ["npz"],
         "command": py(append, str(npz_out), "{artifact}")},
        {"event": "DATA_SYNC_COMPLETED", "command": py(append, str(all_out), "{artifact}")})
    env.store("npz/k/a.npz", "k")
    env.store("games/k/b.db", "k")
    env.completed("npz/k/a.npz", "games/k/b.db", "npz/k/elsewhere.npz", "models/m.pt",
                  "npz/../../escape")
    await wait(lambda: runner.counts["runs"] == 3 and runner.counts["skipped"] == 5)
    env.completed("npz/k/a.npz", reason=LIVE_REASON)
    await asyncio.sleep(0.3)
    assert lines(npz_out) == ["npz/k/a.npz"]
    assert sorted(lines(all_out)) == ["games/k/b.db", "npz/k/a.npz"]
    assert runner.counts["runs"] == 3 and runner.counts["succeeded"] == 3


# ---------------------------------------------------------------------------------- failures
async def test_a_non_zero_exit_is_a_hook_failed_event(env: Env) -> None:
    code = "import sys; sys.stderr.write('x' * 5000 + '\\nTraceback...\\nValueError: bad npz\\n'); sys.exit(3)"
    runner = await env.runner({"event": "SYNC_PAUSED", "command": py(code)})
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    (failed,) = await wait(env.failures, what="HOOK_FAILED")
    assert failed["node"] == NODE and failed["hook"] == os.path.basename(PY)
    assert failed["event"] == "SYNC_PAUSED" and failed["artifact"] is None
    assert failed["exit_code"] == 3 and failed["seconds"] > 0
    error = failed["error"]
    assert error.endswith("Traceback... | ValueError: bad npz")
    assert len(error) <= 300 and "\n" not in error
    assert runner.counts["failed"] == 1 and runner.status()["last_failure"] == failed


async def test_a_command_that_cannot_start_is_a_hook_failed_event(env: Env) -> None:
    not_executable = env.root / "export.py"
    not_executable.write_text("print('hi')\n")
    await env.runner({"event": "SYNC_PAUSED", "command": [str(env.root / "missing.sh")]},
                     {"event": "SYNC_PAUSED", "command": [str(not_executable)]})
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    failures = await wait(lambda: len(env.failures()) == 2 and env.failures())
    by_hook = {f["hook"]: f for f in failures}
    assert set(by_hook) == {"missing.sh", "export.py"}
    assert all(f["exit_code"] is None and "cannot start" in f["error"] for f in failures)
    assert "No such file" in by_hook["missing.sh"]["error"]
    assert "Permission denied" in by_hook["export.py"]["error"]


async def test_a_hook_past_its_timeout_is_killed_with_its_children(env: Env) -> None:
    pids = env.root / "pids"
    child = f"import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)"
    parent = (f"import subprocess, sys; {child.replace('time.sleep(60)', '')}"
              f" subprocess.run([sys.executable, '-c', {child!r}])")
    runner = await env.runner({"event": "SYNC_PAUSED", "command": py(parent),
                               "timeout_seconds": 2.0})
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    (failed,) = await wait(env.failures, what="the timeout")
    assert failed["exit_code"] is None and "timed out after 2s (killed)" in failed["error"]
    assert 2.0 <= failed["seconds"] < 6
    assert len(lines(pids)) == 2
    await wait(lambda: not any(alive(int(p)) for p in lines(pids)), 5, what="no survivor")
    assert runner.status()["running"] == 0


async def test_a_hook_on_hook_failed_that_fails_does_not_trigger_itself(env: Env) -> None:
    ran = env.root / "ran.txt"
    runner = await env.runner(
        {"event": "SYNC_PAUSED", "command": py("raise SystemExit(1)")},
        {"event": "HOOK_FAILED",
         "command": py(f"open({str(ran)!r}, 'a').write('x\\n'); raise SystemExit(2)")})
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    await wait(lambda: len(env.failures()) == 2, what="both failures")
    await asyncio.sleep(1.0)  # a loop would have run it again by now
    assert [f["exit_code"] for f in env.failures()] == [1, 2]
    assert lines(ran) == ["x"] and runner.counts["runs"] == 2


# ------------------------------------------------------------------------- never blocking
async def test_a_slow_hook_blocks_neither_emit_nor_other_hooks(env: Env) -> None:
    fast = env.root / "fast.txt"
    runner = await env.runner(
        {"event": "SYNC_PAUSED", "command": py("import time; time.sleep(60)")},
        {"event": "SYNC_RESUMED", "command": py(f"open({str(fast)!r}, 'w').write('ok')")})
    began = time.perf_counter()
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    assert time.perf_counter() - began < 0.1
    await wait(lambda: runner.status()["running"] == 1, what="the slow hook to start")
    began = time.perf_counter()
    await asyncio.sleep(0.2)  # the loop is free while it runs
    assert time.perf_counter() - began < 0.5
    began = time.perf_counter()
    env.bus.emit(SyncResumed(node=NODE, requested_by="test"))
    assert time.perf_counter() - began < 0.1
    await wait(fast.exists, 5, what="the other hook")
    assert runner.status()["running"] == 1 and runner.counts["succeeded"] == 1


async def test_a_full_queue_drops_the_job_as_a_hook_failed_event(env: Env) -> None:
    runner = await env.runner({"event": "SYNC_PAUSED", "command": py("import time; time.sleep(60)")},
                              workers=1, queue_size=1)
    env.bus.emit(SyncPaused(node=NODE, requested_by="first"))
    await wait(lambda: runner.status()["running"] == 1)
    env.bus.emit(SyncPaused(node=NODE, requested_by="queued"))
    third = env.bus.emit(SyncPaused(node=NODE, requested_by="dropped"))
    (failed,) = await wait(env.failures, what="the drop")
    assert "queue full" in failed["error"] and failed["exit_code"] is None
    dropped_event = [e for e in env.bus.recent() if e.type == EventType.HOOK_FAILED][0]
    assert dropped_event.seq == third.seq + 1  # reported after, not inside, that emit
    status = runner.status()
    assert (status["dropped"], status["running"], status["queued"], status["runs"]) == (1, 1, 1, 1)


async def test_stop_kills_running_commands_and_their_children(env: Env) -> None:
    pids = env.root / "pids"
    child = f"import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)"
    parent = (f"import subprocess, sys; {child.replace('time.sleep(60)', '')}"
              f" subprocess.run([sys.executable, '-c', {child!r}])")
    runner = await env.runner({"event": "SYNC_PAUSED", "command": py(parent)},
                              {"event": "SYNC_PAUSED", "command": py(parent)})
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    await wait(lambda: len(lines(pids)) == 4, what="two hooks with a child each")
    began = time.perf_counter()
    await runner.stop()
    assert time.perf_counter() - began < 2
    await wait(lambda: not any(alive(int(p)) for p in lines(pids)), 5, what="no survivor")
    assert runner.status()["running"] == 0 and env.failures() == []  # stopping is no failure
    env.bus.emit(SyncPaused(node=NODE, requested_by="after"))
    assert runner.status()["queued"] == 0


# ------------------------------------------------------------------------------------ health
async def test_health_names_a_hook_whose_last_runs_all_failed(env: Env) -> None:
    flag = env.root / "broken"
    script = env.root / "export_check.py"
    script.write_text(f"#!{PY}\nimport os, sys\n"
                      f"if os.path.exists({str(flag)!r}): sys.exit('cannot export')\n")
    script.chmod(0o755)
    runner = await env.runner({"event": "SYNC_PAUSED", "command": [str(script)]})
    assert runner.health_check().is_healthy
    flag.touch()
    for i in range(3):
        env.bus.emit(SyncPaused(node=NODE, requested_by=str(i)))
        await wait(lambda: runner.counts["failed"] == i + 1)
    health = runner.health_check()
    assert not health.is_healthy
    assert "export_check.py" in health.message and "cannot export" in health.message
    flag.unlink()
    env.bus.emit(SyncPaused(node=NODE, requested_by="fixed"))
    await wait(lambda: runner.counts["succeeded"] == 1)
    assert runner.health_check().is_healthy


async def test_no_hooks_no_workers(env: Env) -> None:
    runner = await env.runner()
    env.bus.emit(SyncPaused(node=NODE, requested_by="test"))
    assert runner.status()["queued"] == 0 and runner.health_check().message == "no hooks configured"


def test_the_shipped_example_hooks_are_valid() -> None:
    """The commented example in config/distributed_hosts.yaml would load if uncommented."""
    import yaml

    text = (Path(__file__).resolve().parents[2] / "config" / "distributed_hosts.yaml").read_text()
    block = text[text.index("# hooks:"):text.index("\nhooks:")]
    example = yaml.safe_load("\n".join(line.removeprefix("# ") for line in block.splitlines()))
    hooks = [Hook(**h) for h in example["hooks"]]
    assert [h.event for h in hooks] == ["DATA_SYNC_COMPLETED", "HOOK_FAILED"]
