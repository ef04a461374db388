"""The node's data root layout, and the one place that turns a name into a path.

    <data_root>/<data_type>/<path>      this node's own sources (what its generators write)
    <data_root>/<data_type>/@<origin>/<dir>/<stem>.v<sha16><suffix>
                                        a verified copy of version <sha16…> (the first 16 hex
                                        digits of its SHA-256) of <origin>'s <data_type>/<path>:
                                        two origins' files with one path, or two versions of
                                        one file, never share a name
    <data_root>/.ringsync/              engine state: manifest, events log, incoming, snapshots
    <data_root>/.ringsync/quarantine/   copies that failed re-verification, kept for inspection
    <data_root>/.ringsync/live/<origin>/<data_type>/<path>
                                        the newest live snapshot each sender pushed of a database
                                        it is still writing (never a replica, never counted)

Every path that comes from outside (HTTP, config, peers) goes through
``DataRoot.object_path``, which refuses anything that could leave the data type's
directory, in any spelling.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from engine.hashing import sha256_file

DATA_TYPES = ("games", "npz", "models")
"""The artifact kinds a node stores, one directory each under the data root."""

STATE_DIR = ".ringsync"
COPY_PREFIX = "@"
"""First path segment of the tree of copies received from one origin (``@<origin>``); an own
source's path never starts with it."""
VERSION_DIGITS = 16
"""Hex digits of the SHA-256 in a stored copy's name."""
MAX_NAME_BYTES = 255
"""Longest file name the common filesystems hold."""
MAX_PATH_BYTES = 1024


def _has_link(base: Path, parts: tuple[str, ...]) -> bool:
    """Whether ``base`` or the existing part of ``base/parts`` has a symlink in it (then the
    path must be resolved to be checked); a few ``lstat`` calls where resolving it would
    take one for every component from ``/``."""
    where = base
    for part in ("", *parts):
        where = where / part if part else where
        try:
            if stat.S_ISLNK(os.lstat(where).st_mode):
                return True
        except FileNotFoundError:
            return False  # nothing exists below a missing directory
        except OSError:
            return True  # not a directory, unreadable: let resolving decide
    return False


class UnsafePath(ValueError):
    """A requested path that is not a plain relative path inside the data root."""


class DataRoot:
    """A node's data root and its fixed sub-directories."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        """The absolute data root."""
        self.state = self.root / STATE_DIR
        """Engine state, never part of the visible tree."""
        self.incoming = self.state / "incoming"
        """Partial uploads (resumable), renamed into place only when verified."""
        self.snapshots = self.state / "snapshots"
        """Consistent SQLite snapshots waiting to be pushed."""
        self.quarantine = self.state / "quarantine"
        """Stored copies whose bytes no longer matched their hash, under their relative path."""
        self.live = self.state / "live"
        """Received live snapshots of databases still being written, per sending node."""
        self.live_snapshots = self.snapshots / "live"
        """This node's own live snapshots, each kept only while it is being pushed."""

    def create(self) -> None:
        for sub in (self.incoming, self.snapshots, *(self.root / t for t in DATA_TYPES)):
            sub.mkdir(parents=True, exist_ok=True)

    def type_dir(self, data_type: str) -> Path:
        if data_type not in DATA_TYPES:
            raise UnsafePath(f"unknown data type {data_type!r} (expected one of {', '.join(DATA_TYPES)})")
        return self.root / data_type

    def object_path(self, data_type: str, rel: str) -> Path:
        """The final location of ``<data_type>/<rel>``; raises UnsafePath when it is not safe."""
        base = self.type_dir(data_type)
        clean = check_relative(rel)
        final = base.joinpath(*clean.parts)
        # Belt and braces: no symlink in the existing part of the path may lead outside.
        if _has_link(base, clean.parts) and not final.resolve().is_relative_to(base.resolve()):
            raise UnsafePath(f"path {rel!r} leaves the data root")
        return final

    def source_path(self, data_type: str, rel: str) -> Path:
        """Where this node's own source ``<data_type>/<rel>`` lives (``object_path``, and
        ``rel`` may not start in the tree of received copies)."""
        if rel.startswith(COPY_PREFIX):
            raise UnsafePath(f"path {rel!r} starts with {COPY_PREFIX!r}: reserved for copies")
        return self.object_path(data_type, rel)

    def copy_path(self, origin: str, data_type: str, rel: str, sha256: str) -> Path:
        """Where a received copy of ``origin``'s ``<data_type>/<rel>`` with content ``sha256``
        is stored: ``<data_type>/@<origin>/<dir>/<stem>.v<sha16><suffix>``."""
        check_node_name(origin)
        if rel.startswith(COPY_PREFIX):
            raise UnsafePath(f"path {rel!r} starts with {COPY_PREFIX!r}: reserved for copies")
        if len(sha256) != 64 or not set(sha256) <= set("0123456789abcdef"):
            raise UnsafePath(f"bad sha256 {sha256[:80]!r}")
        clean = check_relative(rel)
        name = clean.name
        stem, dot, suffix = name.rpartition(".")
        versioned = (f"{stem}.v{sha256[:VERSION_DIGITS]}.{suffix}" if dot and stem
                     else f"{name}.v{sha256[:VERSION_DIGITS]}")
        return self.object_path(data_type, str(PurePosixPath(f"{COPY_PREFIX}{origin}", clean)
                                               .with_name(versioned)))

    def quarantine_path(self, data_type: str, rel: str) -> Path:
        """A free name for ``<data_type>/<rel>`` under the quarantine directory: the same
        relative path, with ``.1``, ``.2``… appended when an earlier copy is already there."""
        self.type_dir(data_type)
        clean = check_relative(rel)
        base = self.quarantine.joinpath(data_type, *clean.parts)
        candidate, n = base, 0
        while candidate.exists():
            n += 1
            candidate = base.with_name(f"{base.name}.{n}")
        return candidate

    def quarantine_file(self, data_type: str, rel: str, file: Path,
                        sha256: str | None = None) -> Path:
        """Move ``file``, a bad copy of ``<data_type>/<rel>``, under the quarantine (same
        filesystem: an atomic rename) and return where it now is. Given its ``sha256``, an
        earlier quarantined copy with the same bytes is kept instead and ``file`` dropped, so
        a sender retrying the same bad bytes cannot fill the disk."""
        if sha256 is not None:
            size = file.stat().st_size
            base = self.quarantine.joinpath(data_type, *check_relative(rel).parts)
            earlier, n = base, 0
            while earlier.exists():
                if earlier.stat().st_size == size and sha256_file(earlier) == sha256:
                    file.unlink()
                    return earlier
                n += 1
                earlier = base.with_name(f"{base.name}.{n}")
        target = self.quarantine_path(data_type, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(file, target)
        return target

    def live_path(self, origin: str, data_type: str, rel: str) -> Path:
        """Where the newest live snapshot of ``<data_type>/<rel>`` sent by ``origin`` is kept;
        raises UnsafePath for a path or origin that is not a plain name."""
        self.type_dir(data_type)
        clean = check_relative(rel)
        check_node_name(origin)
        return self.live.joinpath(origin, data_type, *clean.parts)

    def partial_path(self, data_type: str, rel: str, sha256: str,
                     live_origin: str | None = None, origin: str = "") -> Path:
        """Where an upload of ``origin``'s ``rel`` with declared ``sha256`` accumulates until
        verified. A live snapshot from ``live_origin`` has a part file of its own (never
        shared with the finished artifact's upload or another sender's live snapshot)."""
        key = (f"{origin}:{data_type}/{rel}" if live_origin is None
               else f"live/{live_origin}/{data_type}/{rel}")
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.incoming / f"{name}.{sha256[:16]}.part"

    def staged_path(self, data_type: str, rel: str, sha256: str, origin: str) -> Path:
        """Where rsync puts ``origin``'s ``rel`` with declared ``sha256`` for this node to
        verify and publish (``POST /v1/staged``): a file of its own beside the HTTP part,
        so an rsync and an upload of one version never write into each other. rsync keeps
        an interrupted transfer in ``incoming/.rsync-partial/`` (``--partial-dir``), never
        under this name."""
        return self.incoming / staged_name(data_type, rel, sha256, origin)

    def prune_partials(self, max_age: float, keep: set[Path], now: float) -> list[Path]:
        """Delete partial uploads and staged files nobody has touched for ``max_age`` seconds
        (abandoned by their sender), except those in ``keep`` (and the claimed files of the
        staged names in it); returns what was removed. Touched is the later of mtime and
        ctime: rsync gives a staged file its source's mtime, often days old, while renaming
        it into place sets its ctime."""
        removed = []
        staged = [*self.incoming.glob("*.rsync"), *self.incoming.glob("*.rsync.*.claimed"),
                  *self.incoming.glob(".rsync-partial/*")]
        for part in [*self.incoming.glob("*.part"), *staged]:
            try:
                if part in keep or claimed_base(part) in keep:
                    continue
                st = part.stat()
                if now - max(st.st_mtime, st.st_ctime) > max_age:
                    part.unlink()
                    removed.append(part)
            except FileNotFoundError:
                continue
        return removed

    def used_bytes(self) -> int:
        """Bytes of disk the data under the data root takes: what a disk quota is measured
        against, by allocated blocks (``st_blocks``), not ``st_size``: the blocks an
        interrupted upload reserved for its part (fallocate) count until the part is resumed
        or pruned, and a sparse file counts what it really holds.

        Everything counts (the data-type trees, snapshots, partial uploads, quarantine) but
        the engine's bookkeeping files directly in ``.ringsync/`` (manifest, event log),
        whose size follows activity rather than data held. Symlinks: a top-level directory
        that is a symlink (``games/`` on another disk) is followed and counted, as the scanner
        follows it; below the top level, symlinked directories are followed by neither.
        A symlinked file counts as the file it points to (the scanner reads through it)."""
        total = 0
        state = str(self.state)
        tops = [str(self.root)]
        try:
            with os.scandir(self.root) as entries:
                tops += [e.path for e in entries if e.is_symlink() and e.is_dir()]
        except OSError:
            pass
        for top in tops:
            for dirpath, _dirs, files in os.walk(top):
                if dirpath == state:
                    continue
                for name in files:
                    try:
                        total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
                    except OSError:
                        continue
        return total


def staged_name(data_type: str, rel: str, sha256: str, origin: str) -> str:
    """The name under ``.ringsync/incoming/`` of a staged rsync (``DataRoot.staged_path``),
    which a sender computes for a receiver's data root it only knows from the config."""
    name = hashlib.sha256(f"{origin}:{data_type}/{rel}".encode()).hexdigest()[:32]
    return f"{name}.{sha256[:16]}.rsync"


def claimed_path(staged: Path, token: str) -> Path:
    """Where one request's claim moves a staged file before reading it back."""
    return staged.with_name(f"{staged.name}.{token}.claimed")


def claimed_base(path: Path) -> Path | None:
    """The staged file a claimed file was (``claimed_path``'s inverse), else None."""
    name = path.name
    if not name.endswith(".claimed"):
        return None
    return path.with_name(name[:-len(".claimed")].rpartition(".")[0])


def check_node_name(name: str) -> None:
    """A node name used as a path segment: one plain, non-hidden segment."""
    if not name or "/" in name:
        raise UnsafePath(f"origin {name!r} is not a node name")
    check_relative(name)


def copy_origin(rel: str) -> str | None:
    """The origin of a path under a data type's directory that lies in a tree of received
    copies (``@<origin>/...``), else None."""
    first = rel.split("/", 1)[0]
    return first[len(COPY_PREFIX):] if first.startswith(COPY_PREFIX) and "/" in rel else None


def check_relative(rel: str) -> PurePosixPath:
    """Accept only a plain relative POSIX path of normal, non-hidden segments."""
    if not rel or "\x00" in rel or "\\" in rel or len(rel.encode()) > MAX_PATH_BYTES:
        raise UnsafePath(f"bad path {rel[:80]!r}")
    path = PurePosixPath(rel)
    if path.is_absolute() or rel.startswith("/"):
        raise UnsafePath(f"path {rel!r} is absolute")
    for part in rel.split("/"):
        if part in ("", ".", "..") or part.startswith("."):
            raise UnsafePath(f"path {rel!r} has a forbidden segment {part!r}")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise UnsafePath(f"path segment {part[:40]!r}… is longer than {MAX_NAME_BYTES} bytes")
    return path
