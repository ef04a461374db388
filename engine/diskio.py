"""Writing received bytes with little CPU (positional writes, block reservation, early
writeback), and putting a verified file in place durably (link, replace, directory fsync).

A failing disk (EIO, ENOSPC… from a write, an fsync or a link) is a ``DiskError``; its
``status`` is the HTTP answer the receiver gives: 507 when the disk or quota is full, 503
otherwise; both are retryable for a sender.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from pathlib import Path

from engine.hashing import CHUNK

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Errors that mean "no room": answered 507 Insufficient Storage."""


def disk_error_status(code: int | None) -> int:
    """The HTTP status for a receiver's disk failing with errno ``code``: 507 for a full
    disk or quota, 503 for anything else (EIO, EROFS…): the next attempt may succeed."""
    return 507 if code in FULL_ERRNOS else 503


class DiskError(Exception):
    """An OSError of the receiver's own disk while writing, reading back, fsyncing or
    linking a part (not a hang-up of the sender). The part's bytes cannot be trusted
    afterwards (after a failed fsync the page cache may hold bytes that never reach the
    disk): it is discarded."""

    def __init__(self, op: str, cause: OSError) -> None:
        self.op = op
        self.cause = cause
        self.errno = cause.errno
        self.errno_name = errno.errorcode.get(cause.errno or 0, str(cause.errno))
        super().__init__(f"{op} failed: {self.errno_name}: {cause.strerror or cause}")

    @property
    def status(self) -> int:
        return disk_error_status(self.errno)

_FALLOC_FL_KEEP_SIZE = 1
try:
    _fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
except (OSError, AttributeError):  # not Linux/glibc: no reservation
    _fallocate = None


def reserve(fd: int, offset: int, length: int) -> None:
    """Best effort: allocate ``length`` bytes of blocks from ``offset`` without changing the
    file's size (a partial upload's size must keep saying how many bytes arrived). On ext4
    this costs several times less CPU per written byte than allocating block by block."""
    if _fallocate is not None and length > 0:
        _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length)  # errors (EOPNOTSUPP…) ignored


def write_at(fd: int, pieces: list[bytes], position: int) -> int:
    """Write ``pieces`` at ``position``; start their writeback now so the final fsync has
    little left to do. Returns the position after the last byte."""
    start = position
    for data in pieces:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, start, position - start, os.POSIX_FADV_DONTNEED)
    return position


def fsync_path(path: Path) -> None:
    """fsync a file's data, or (a directory) make a rename, link or unlink in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path
"""The name the directory case reads best under."""


def make_dirs(directory: Path, root: Path) -> None:
    """``mkdir -p directory`` where every directory it creates is made durable: each new one
    is fsynced together with its parent, up to ``root`` (which must contain it)."""
    missing: list[Path] = []
    d = directory
    while not d.exists() and d != root and root in d.parents:
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        fsync_dir(made.parent)
    if missing:
        fsync_dir(directory)


def publish(part: Path, final: Path, root: Path | None = None) -> None:
    """Give a verified part its final name without ever replacing an existing file
    (raises FileExistsError instead). Directories it creates are fsynced up to ``root``.

    Any other OSError is a ``DiskError``; the final name is then taken back (best effort:
    a link whose directory fsync failed is not known to be durable), the part is left to
    the caller to discard."""
    error = publish_all([(part, final)], root)[0]
    if error is not None:
        raise error


def publish_all(pairs: list[tuple[Path, Path]],
                root: Path | None = None) -> list[FileExistsError | DiskError | None]:
    """``publish`` for many (part, final) pairs, each on its own: every part is linked under
    its final name, then each directory that gained a name is fsynced once for all of them
    (a batch of a thousand files in one directory costs one directory fsync, not a
    thousand). One error per pair (None: published, the part unlinked); a directory whose
    fsync fails fails every pair linked into it, their final names taken back."""
    results: list[FileExistsError | DiskError | None] = [None] * len(pairs)
    linked: dict[Path, list[int]] = {}
    made: set[Path] = set()
    for i, (part, final) in enumerate(pairs):
        try:
            if final.parent not in made:
                if root is not None:
                    make_dirs(final.parent, root)
                else:
                    final.parent.mkdir(parents=True, exist_ok=True)
                made.add(final.parent)
            os.link(part, final)
        except FileExistsError as exc:
            results[i] = exc
            continue
        except OSError as exc:
            results[i] = DiskError("link", exc)
            continue
        linked.setdefault(final.parent, []).append(i)
    for directory, members in linked.items():
        try:
            fsync_dir(directory)
        except OSError as exc:
            for i in members:
                try:
                    os.unlink(pairs[i][1])
                except OSError:
                    pass
                results[i] = DiskError("directory fsync", exc)
            continue
        for i in members:
            try:
                os.unlink(pairs[i][0])
            except OSError:
                pass  # published all the same; a stale part is swept from incoming later
    return results


def settle(path: Path) -> str:
    """The SHA-256 of a file another process wrote (rsync into the incoming area), read
    back and fsynced in one pass, so that the bytes hashed are on disk before they are
    published. A failing fsync is a ``DiskError`` (those bytes cannot be trusted)."""
    hasher = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        while block := os.read(fd, CHUNK):
            hasher.update(block)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise DiskError("fsync", exc) from exc
    finally:
        os.close(fd)
    return hasher.hexdigest()


def replace_live(part: Path, target: Path) -> None:
    """Make a verified live snapshot the newest one of its (origin, path). The one place a
    file is replaced: the path is keyed by the sending node, so no two senders collide.
    An OSError is a ``DiskError``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise DiskError("replace", exc) from exc


RESERVE_BYTES = 256 * 2**10
"""Space a node keeps aside in ``.ringsync/reserve`` so it can open its manifest (WAL and
shared-memory files) and start on a disk its data filled: released at start when the
manifest cannot be opened, made again once there is room."""


def ensure_reserve(path: Path, size: int = RESERVE_BYTES) -> bool:
    """Keep ``size`` bytes allocated at ``path``; False when the disk has no room for it."""
    try:
        if path.exists() and path.stat().st_blocks * 512 >= size:
            return True
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError:
        path.unlink(missing_ok=True)
        return False
