"""One short seed of the chaos campaign inside ``make test`` (longer ones: ``make chaos``).

A real 6-node cluster (coordinator, 3 GPU nodes with 3 MiB quotas, 2 CPU nodes), a generator
writing into the GPU nodes' data roots, seeded faults (SIGKILL/restart incl. the coordinator,
SIGSTOP/SIGCONT, bit rot keeping size+mtime, same-size in-place replacement keeping mtime,
rows appended after a push, same-path collisions, clock steps under libfaketime, a holder's data
root restored from an older snapshot, a full small filesystem, a crash in the middle of a
deletion via strace), then heal and judge from files on disk only. See docs/chaos.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.campaign import run_seed

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

SEED = int(os.environ.get("CHAOS_TEST_SEED", "1"))


def test_short_seed_loses_nothing_and_deletes_only_behind_intact_copies(tmp_path: Path) -> None:
    result = run_seed(SEED, tmp_path / f"seed-{SEED}", fault_seconds=50.0, heal_seconds=30.0)
    print(result.line())
    print(f"details: {result.log_path}")
    summary = f"{result.line()}\ndetails: {result.log_path}\n" + "\n".join(
        [f"lost: {x}" for x in result.lost[:10]] + [f"unsafe: {x}" for x in result.unsafe[:10]]
        + [f"torn: {x}" for x in result.torn[:10]])
    assert result.deletions > 0, "no deletion in the run: it proves nothing\n" + summary
    assert not result.lost, summary
    assert not result.unsafe, summary
    assert not result.torn, summary
