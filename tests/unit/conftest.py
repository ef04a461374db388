"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.manifest import ClusterManifest


@pytest.fixture
def open_manifest(tmp_path: Path) -> Iterator[Callable[[str], ClusterManifest]]:
    """``open_manifest(node)``: a fresh manifest of ``node``, closed after the test."""
    opened: list[ClusterManifest] = []

    def open_(node: str) -> ClusterManifest:
        opened.append(ClusterManifest(tmp_path / f"{node}.db", node))
        return opened[-1]

    yield open_
    for m in opened:
        m.close()
