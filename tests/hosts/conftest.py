"""The hosts tier: clusters whose nodes are real hosts in network namespaces (root only).

Without root (or without ip/tc/nft) every test here skips with one line saying why. Each
cluster is torn down after its test, namespaces included; a test whose teardown leaves a
namespace or link behind fails (``HostsCluster.stop_all``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import HostsCluster
from tests.support.netns import sweep, unavailable

_WHY = unavailable()
if _WHY is None:
    sweep()  # what a killed earlier run left


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if _WHY is None:
        return
    mark = pytest.mark.skip(reason=_WHY)
    for item in items:
        if "tests/hosts/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(mark)


@pytest.fixture
def make_hosts(tmp_path: Path) -> Iterator:
    """Start a cluster of hosts: ``make_hosts(gpus=2, links={...}, env={node: {...}},
    **cluster_kwargs)``."""
    started: list[HostsCluster] = []

    def factory(skip: tuple[str, ...] = (), env: dict[str, dict[str, str]] | None = None,
                **kwargs) -> HostsCluster:
        cluster = HostsCluster(tmp_path / f"hosts{len(started)}", **kwargs)
        cluster.env.update(env or {})
        started.append(cluster)
        cluster.start(skip)
        return cluster

    yield factory
    errors = []
    for cluster in started:
        try:
            cluster.stop_all()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("; ".join(errors))
