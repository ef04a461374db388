"""Shared fixtures: real multi-process clusters on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator:
    """Start a cluster: ``make_cluster(gpus=2, **config_overrides)``; always torn down."""
    started: list[Cluster] = []

    def factory(**kwargs) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(started)}", **kwargs)
        started.append(cluster)
        cluster.start()
        return cluster

    yield factory
    for cluster in started:
        cluster.stop_all()


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    """A coordinator and two GPU nodes, started and healthy."""
    return make_cluster(gpus=2)
