"""SHA-256 of files in bounded chunks (never a whole file in memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            hasher.update(block)
    return hasher.hexdigest()


def sha256_prefix(path: Path, length: int, hasher: "hashlib._Hash", chunk: int = CHUNK) -> None:
    """Feed the first ``length`` bytes of ``path`` into ``hasher`` (resuming an upload)."""
    with open(path, "rb") as fh:
        remaining = length
        while remaining > 0:
            block = fh.read(min(chunk, remaining))
            if not block:
                raise OSError(f"{path} is shorter than {length} bytes")
            hasher.update(block)
            remaining -= len(block)
