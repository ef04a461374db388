"""Shared fixtures: real multi-process clusters on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


def _factory(root: Path) -> Iterator:
    started: list[Cluster] = []

    def factory(skip: tuple[str, ...] = (), **kwargs) -> Cluster:
        cluster = Cluster(root / f"cluster{len(started)}", **kwargs)
        started.append(cluster)
        cluster.start(skip)
        return cluster

    try:
        yield factory
    finally:
        for cluster in started:
            cluster.stop_all()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator:
    """Start a cluster: ``make_cluster(gpus=2, **config_overrides)``; always torn down."""
    yield from _factory(tmp_path)


@pytest.fixture(scope="module")
def make_module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Like ``make_cluster`` but shared by a module's tests (for read-mostly checks)."""
    yield from _factory(tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    """A coordinator and two GPU nodes, started and healthy."""
    return make_cluster(gpus=2)
