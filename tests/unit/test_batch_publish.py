"""BatchRsync's publishing while rsync runs, as pure logic: ``_send`` (the rsync run) and
``_publish_some`` (the receiver's ``POST /v1/staged``) are replaced, so the races a real
run only sometimes shows are forced: a file rsync listed whose staged file the receiver has
not renamed into place yet (404 during the run: asked again after it), a file rsync never
listed, and a run that fails as a whole after some files were published."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from engine.manifest import Artifact
from engine.transfers import Transfer
from engine.transport import batch_rsync
from engine.transport.base import PushRequest, PushResult, TransferError
from engine.transport.batch_rsync import BatchRsync, _Sending

pytestmark = pytest.mark.unit

SHA = "ab" * 32


def _request(n: int) -> PushRequest:
    art = Artifact("npz", f"many/f{n:04d}.npz", None, 100, SHA, 0.0, "gpu-1")
    return PushRequest(art, Path(f"/src/f{n}"), "coord", "http://coord", "interval")


def _answer(request: PushRequest) -> dict:
    return {"status": 201, "sha256": SHA, "size": 100, "verified_at": 1.0}


class _Scripted(BatchRsync):
    """rsync lists the files in ``steps`` (a list of index lists, a pause between them);
    the receiver answers 404 for a file in ``unstaged`` the first time it is asked while
    the run goes on, and for a file in ``never`` always."""

    def __init__(self, steps: list[list[int]], unstaged: set[int] = frozenset(),
                 never: set[int] = frozenset(), fail: bool = False) -> None:
        super().__init__(rsync=None, control_dir=Path("/nonexistent"))  # type: ignore[arg-type]
        self.steps, self.unstaged, self.never, self.fail = steps, set(unstaged), never, fail
        self.asked: list[list[int]] = []
        self.running = False

    async def _send(self, host, sending: _Sending) -> None:  # noqa: ANN001
        self.running = True
        try:
            for step in self.steps:
                for i in step:
                    sending.sent[i] = 100
                    sending.pending.append(i)
                if len(sending.pending) >= batch_rsync.EARLY_FILES:
                    sending.wake.set()
                await asyncio.sleep(0.01)
                await asyncio.sleep(0)  # the publisher runs between the listings
        finally:
            self.running = False
            sending.rsynced = 1.0
        if self.fail:
            raise TransferError("rsync to coord exited 12: connection reset")

    async def _publish_some(self, requests: list[PushRequest]) -> list[dict]:
        indices = [int(r.artifact.path[-8:-4]) for r in requests]
        self.asked.append(indices)
        answers = []
        for i, request in zip(indices, requests):
            if i in self.never or (self.running and i in self.unstaged):
                answers.append({"status": 404, "error": f"nothing staged for {i}"})
            else:
                answers.append(_answer(request))
        return answers


def _run(batch: _Scripted, n: int) -> list:
    requests = [_request(i) for i in range(n)]
    transfers = [Transfer(id=n, direction="out", source="gpu-1", target="coord",
                          artifact=r.artifact.key, size=100, transport="rsync")
                 for n, r in enumerate(requests)]
    return asyncio.run(batch._send_and_publish(None, _Sending(requests, transfers)))


@pytest.fixture(autouse=True)
def _small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_rsync, "EARLY_FILES", 3)


def test_a_file_not_yet_in_place_when_published_early_is_asked_again_after_the_run() -> None:
    batch = _Scripted([[0, 1, 2], [3, 4, 5], [6]], unstaged={1, 4})
    outcomes = _run(batch, 7)
    assert all(isinstance(o, PushResult) for o in outcomes), outcomes
    asked_during = [i for group in batch.asked[:-1] for i in group]
    assert {1, 4} <= set(asked_during)  # published early, found nothing staged
    assert set(batch.asked[-1]) >= {1, 4, 6}  # the final round asks them again
    assert sorted(i for group in batch.asked for i in group) == \
        sorted([*range(7), 1, 4])  # each file asked once, the two early 404s twice


def test_a_file_rsync_never_listed_is_asked_once_and_fails_alone() -> None:
    batch = _Scripted([[0, 1, 2], [4]], never={3})
    outcomes = _run(batch, 5)
    assert isinstance(outcomes[3], TransferError) and "answered 404" in str(outcomes[3])
    assert all(isinstance(o, PushResult) for i, o in enumerate(outcomes) if i != 3)
    assert batch.asked[-1].count(3) == 1


def test_a_run_that_fails_keeps_what_was_published_and_fails_the_rest() -> None:
    batch = _Scripted([[0, 1, 2], [3]], unstaged={2}, fail=True)
    outcomes = _run(batch, 6)
    assert [isinstance(o, PushResult) for o in outcomes[:4]] == [True] * 4
    assert all(isinstance(o, TransferError) and "exited 12" in str(o) for o in outcomes[4:])


def test_a_batch_directory_is_private_and_a_dead_nodes_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_rsync, "LINK_SCRATCH", tmp_path)
    source = tmp_path / "source.npz"
    source.write_bytes(b"x")
    where = batch_rsync._links(tmp_path, ["a.rsync", "b.rsync"], [source, source])
    assert where.parent == tmp_path and where.stat().st_mode & 0o777 == 0o700
    assert (where / "a.rsync").resolve() == source.resolve()
    assert (where / batch_rsync.LIST).read_text() == "a.rsync\nb.rsync\n"
    ns = batch_rsync._pid_namespace()
    dead = tmp_path / f"{batch_rsync.SCRATCH_PREFIX}{ns}-{2**22 + 12345}-abc"  # > pid_max
    dead.mkdir()
    (dead / "x.rsync").symlink_to(source)
    other_ns = tmp_path / f"{batch_rsync.SCRATCH_PREFIX}{ns + 1}-{2**22 + 12345}-abc"
    other_ns.mkdir()  # another pid namespace's (a container sharing /dev/shm): not ours
    kept = tmp_path / "kept"
    kept.mkdir()
    hostile = [tmp_path / f"{batch_rsync.SCRATCH_PREFIX}{ns}-{p}-x"
               for p in ("99999999999999999999", "1_0", " 12", "\u0661\u0662")]
    for name in hostile:  # another user's symlinks and odd pids: never followed, never fatal
        name.symlink_to(kept)
    batch = BatchRsync(rsync=None, control_dir=tmp_path / "ssh")  # type: ignore[arg-type]
    assert batch.scratch == tmp_path
    assert not dead.exists(), "a killed node's batch directory is removed at start"
    assert where.exists(), "a live process's batch directory is kept"
    assert other_ns.exists() and kept.exists() and all(h.is_symlink() for h in hostile)


def test_symlinks_go_to_a_tmpfs_when_there_is_one(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_rsync, "LINK_SCRATCH", tmp_path / "shm")
    assert batch_rsync.link_scratch(tmp_path / "ssh") == tmp_path / "ssh"
    (tmp_path / "shm").mkdir()
    assert batch_rsync.link_scratch(tmp_path / "ssh") == tmp_path / "shm"


def test_a_full_tmpfs_falls_back_to_the_control_dir(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shm, control = tmp_path / "shm", tmp_path / "ssh"
    shm.mkdir()
    control.mkdir()
    monkeypatch.setattr(batch_rsync, "LINK_SCRATCH", shm)
    batch = BatchRsync(rsync=None, control_dir=control)  # type: ignore[arg-type]
    real = batch_rsync._links

    def full(scratch: Path, names: list[str], sources: list[Path]) -> Path:
        if scratch == shm:
            raise OSError(28, "No space left on device")
        return real(scratch, names, sources)

    monkeypatch.setattr(batch_rsync, "_links", full)
    assert batch._links(["a.rsync"], [tmp_path]).parent == control
    batch.fallback = shm  # neither can take it: the batch fails as this node's fault
    with pytest.raises(TransferError, match="cannot make this batch's links") as failed:
        batch._links(["a.rsync"], [tmp_path])
    assert failed.value.target_fault is False


def test_a_batch_cancelled_while_its_links_are_made_leaves_no_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread making the links goes on after its caller is cancelled (a stop, a push
    timeout); the directory it then makes must not stay behind."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(batch_rsync, "LINK_SCRATCH", shm)
    batch = BatchRsync(rsync=None, control_dir=tmp_path)  # type: ignore[arg-type]
    real = batch_rsync._links
    started = threading.Event()

    def slow(scratch: Path, names: list[str], sources: list[Path]) -> Path:
        started.set()
        time.sleep(0.3)  # a slow filesystem: the caller is cancelled meanwhile
        return real(scratch, names, sources)

    monkeypatch.setattr(batch_rsync, "_links", slow)

    async def main() -> None:
        making = asyncio.create_task(batch._make_links(["a.rsync"], [tmp_path]))
        await asyncio.to_thread(started.wait, 5)
        making.cancel()
        with pytest.raises(asyncio.CancelledError):
            await making
        await asyncio.sleep(0.6)  # the thread is done by now

    asyncio.run(main())
    assert list(shm.iterdir()) == [], "the cancelled batch's directory stayed"
