"""The scanner refuses names that are not valid UTF-8, one by one (issue 12)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine.paths import DataRoot
from engine.scanner import Scanner, display_name, encodable

pytestmark = pytest.mark.unit

LATER = time.time() + 3600


@pytest.fixture
def data(tmp_path: Path) -> DataRoot:
    d = DataRoot(tmp_path / "root")
    d.create()
    return d


def make(data: DataRoot, rel: bytes, content: bytes = b"payload") -> None:
    path = os.fsencode(data.root) + b"/" + rel
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(content)


def scan(data: DataRoot) -> tuple[Scanner, set[str]]:
    s = Scanner(data, "gpu-1", ["*.tmp"], 0.0)
    return s, {f"{c.data_type}/{c.path}" for c in s.candidates({}, now=LATER)}


def test_encodable_and_display_name() -> None:
    bad = os.fsdecode(b"bad\xff.db")
    assert encodable("good.db") and encodable("ünï.npz") and not encodable(bad)
    assert display_name(bad) == "bad\\xff.db"
    assert display_name("ünï.npz") == "ünï.npz"
    display_name(bad).encode("utf-8")  # printable and encodable


def test_a_bad_file_name_is_refused_and_the_others_are_found(data: DataRoot) -> None:
    make(data, b"games/k/good.db")
    make(data, b"games/k/bad\xff.db")
    make(data, "npz/k/ünï.npz".encode())
    s, found = scan(data)
    assert found == {"games/k/good.db", "npz/k/ünï.npz"}
    assert list(s.refused) == ["games/k/bad\\xff.db"]
    assert "UTF-8" in s.refused["games/k/bad\\xff.db"]


def test_a_bad_directory_name_is_refused_with_everything_below_it(data: DataRoot) -> None:
    make(data, b"npz/d\xfe/a.npz")
    make(data, b"npz/d\xfe/sub/b.npz")
    make(data, b"npz/ok/c.npz")
    s, found = scan(data)
    assert found == {"npz/ok/c.npz"}
    assert list(s.refused) == ["npz/d\\xfe"]


def test_hidden_and_sidecar_bad_names_are_ignored_silently(data: DataRoot) -> None:
    make(data, b"games/k/.tmp\xff.db")
    make(data, b"games/k/bad\xff.db-wal")  # a sidecar: never scanned, whatever its name
    make(data, b"games/.hid\xff/a.db")
    s, found = scan(data)
    assert s.refused == {}
    assert found == set()


def test_refused_names_follow_the_disk(data: DataRoot) -> None:
    make(data, b"npz/k/bad\xff.npz")
    s = Scanner(data, "gpu-1", [], 0.0)
    s.candidates({}, now=LATER)
    assert list(s.refused) == ["npz/k/bad\\xff.npz"]
    os.rename(os.fsencode(data.root) + b"/npz/k/bad\xff.npz",
              os.fsencode(data.root) + b"/npz/k/renamed.npz")
    found = s.candidates({}, now=LATER)
    assert s.refused == {}
    assert [c.path for c in found] == ["k/renamed.npz"]


def test_live_databases_skip_bad_names(data: DataRoot) -> None:
    make(data, b"games/k/bad\xff.db")
    s = Scanner(data, "gpu-1", [], 3600.0)  # nothing finished: every database is live
    assert s.live_databases() == []


def test_every_candidate_path_is_encodable(data: DataRoot) -> None:
    for rel in (b"games/k/a\xff.db", b"games/k/b.db", b"npz/\xc3(/x.npz", b"npz/k/\xed\xa0\x80.npz"):
        make(data, rel)
    s, found = scan(data)
    assert found == {"games/k/b.db"}
    for name in (*found, *s.refused):
        name.encode("utf-8")
    assert len(s.refused) == 3
