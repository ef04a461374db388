"""Supervised components on a real cluster: a component whose step fails is reported and
restarted, never dies silently.

The coordinator runs embedded (as under the dashboard) with two GPU node processes. Its
manifest is made to refuse capacity rows the way a full disk does (``sqlite3``'s
``OperationalError: database or disk is full``), which is what membership writes after each
``/status`` answer: before the runtime, that killed membership within a second while
``/health`` kept saying "all nodes up".
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.support.cluster import Cluster, embedded_node, until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


async def test_a_failing_membership_is_reported_restarted_and_recovers(make_cluster) -> None:
    cluster: Cluster = make_cluster(gpus=2, skip=("coord",))
    async with embedded_node(cluster, "coord") as node:
        await until(lambda: node.membership.members["gpu-1"].state == "up", 10, "gpu-1 up")
        real = node.manifest.set_capacity

        def full(*_args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        node.manifest.set_capacity = full
        health = await until(lambda: (h := node.health_check()) and not h.is_healthy and h,
                             10, "/health to turn unhealthy")
        components = health.details["components"]
        assert "membership" in components["message"], components
        assert "database or disk is full" in components["message"]
        assert "components" in health.message
        failed = await until(lambda: cluster.events("coord", "COMPONENT_FAILED"), 5,
                             "COMPONENT_FAILED")
        assert failed[0]["payload"]["component"] == "membership"
        assert failed[0]["payload"]["restart_in_seconds"] == 1.0
        streak = node.supervisor.service("membership").failures
        await until(lambda: node.supervisor.service("membership").failures > streak, 10,
                    "a restart that fails again")

        node.manifest.set_capacity = real
        recovered = await until(lambda: cluster.events("coord", "COMPONENT_RECOVERED"), 15,
                                "COMPONENT_RECOVERED")
        assert recovered[0]["payload"]["component"] == "membership"
        assert recovered[0]["payload"]["failures"] >= 2
        assert node.health_check().details["components"]["is_healthy"]
        status = node.status()["components"]["membership"]
        assert status["failures"] == 0 and status["failed_total"] >= 2
