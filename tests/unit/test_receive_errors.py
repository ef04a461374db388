"""Issue 12: how a receiver's failing disk and a stalled sender are answered, and how the
sender classifies those answers (pure logic, no cluster)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from engine import diskio
from engine.server import body
from engine.transport.http import error_kind

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(("code", "status"), [
    (errno.ENOSPC, 507), (errno.EDQUOT, 507), (errno.EIO, 503), (errno.EROFS, 503), (None, 503)])
def test_a_disk_error_maps_to_a_retryable_5xx(code: int | None, status: int) -> None:
    assert diskio.disk_error_status(code) == status
    exc = diskio.DiskError("fsync", OSError(code, "boom") if code else OSError("boom"))
    assert exc.status == status
    assert error_kind(status) == (True, status != 507)


def test_a_disk_error_names_its_errno_and_operation() -> None:
    exc = diskio.DiskError("fsync", OSError(errno.EIO, "Input/output error"))
    assert exc.errno_name == "EIO" and exc.op == "fsync"
    assert "fsync failed: EIO" in str(exc)


@pytest.mark.parametrize(("status", "retryable", "target_fault"), [
    (400, False, False), (401, False, True), (403, False, True), (409, False, False),
    (408, True, True), (422, True, False), (500, True, True), (503, True, True),
    (507, True, False)])
def test_sender_error_classification(status: int, retryable: bool, target_fault: bool) -> None:
    assert error_kind(status) == (retryable, target_fault)


def test_backpressure_is_never_a_target_fault() -> None:
    assert error_kind(503, "disk") == (True, False)


def test_upload_idle_seconds_is_read_from_the_environment_at_call_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(body.IDLE_ENV, raising=False)
    assert body.upload_idle_seconds() == body.UPLOAD_IDLE_SECONDS == 30.0
    monkeypatch.setenv(body.IDLE_ENV, "1.5")
    assert body.upload_idle_seconds() == 1.5
    for bad in ("nonsense", "0", "-3"):
        monkeypatch.setenv(body.IDLE_ENV, bad)
        assert body.upload_idle_seconds() == body.UPLOAD_IDLE_SECONDS


def test_publish_that_cannot_link_is_a_disk_error_and_leaves_no_final(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part, final = tmp_path / "a.part", tmp_path / "out" / "a.v1.npz"
    part.write_bytes(b"x")

    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_space)
    with pytest.raises(diskio.DiskError) as caught:
        diskio.publish(part, final)
    assert caught.value.status == 507 and not final.exists()


def test_publish_whose_directory_fsync_fails_takes_the_name_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part, final = tmp_path / "a.part", tmp_path / "out" / "a.v1.npz"
    part.write_bytes(b"x")

    def eio(_path: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(diskio, "fsync_dir", eio)
    with pytest.raises(diskio.DiskError) as caught:
        diskio.publish(part, final)
    assert caught.value.status == 503 and not final.exists()


class _SilentContent:
    """A request body that sends some bytes and then nothing, never ending."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def readchunk(self) -> tuple[bytes, bool]:
        if self.pieces:
            return self.pieces.pop(0), False
        await asyncio.sleep(3600)
        return b"", False

    def at_eof(self) -> bool:
        return False


class _Request:
    def __init__(self, content: _SilentContent) -> None:
        self.content = content


class _Transfer:
    offset, done = 0, 0


def test_a_silent_sender_stalls_after_the_idle_time_keeping_what_arrived(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(body.IDLE_ENV, "0.2")
    part = tmp_path / "x.part"
    request = _Request(_SilentContent([b"a" * 1000, b"b" * 500]))

    async def run() -> None:
        await body.receive_body(request, part, 0, 4000, 1 << 20, _Transfer())  # type: ignore[arg-type]

    with pytest.raises(body.UploadStalled):
        asyncio.run(asyncio.wait_for(run(), 5))
    assert part.read_bytes() == b"a" * 1000 + b"b" * 500


def test_a_failing_write_is_a_disk_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def eio(*_args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(diskio, "write_at", eio)
    part = tmp_path / "x.part"

    class _Done(_SilentContent):
        def at_eof(self) -> bool:
            return not self.pieces

        async def readchunk(self) -> tuple[bytes, bool]:
            return (self.pieces.pop(0) if self.pieces else b""), False

    async def run() -> None:
        await body.receive_body(_Request(_Done([b"a" * 10])), part, 0, 10, 1 << 20,  # type: ignore[arg-type]
                                _Transfer())  # type: ignore[arg-type]

    with pytest.raises(diskio.DiskError) as caught:
        asyncio.run(run())
    assert caught.value.errno_name == "EIO" and caught.value.op == "write"
