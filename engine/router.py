"""SyncRouter: decides which nodes an artifact should go to.

This first version knows the push-from-generator rule: a producing node sends
every finished artifact to the coordinator, unless the coordinator is excluded
for that artifact or down. Capacity-, policy- and backpressure-aware routing for
the other strategies builds on the same ``get_sync_targets`` call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from engine.config import ClusterConfig
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest


class SyncRouter:
    """Where should ``(data_type, config_key)`` go from this node?"""

    def __init__(self, config: ClusterConfig, node: str, manifest: ClusterManifest,
                 is_down: Callable[[str], bool] = lambda _name: False) -> None:
        self.config = config
        self.node = node
        self.manifest = manifest
        self.is_down = is_down
        """Membership's verdict; a down node gets nothing until NODE_RECOVERED."""

    def _excluded(self, target: str, data_type: str, path: str | None) -> bool:
        subject = f"{data_type}/{path or ''}"
        return any(node == target and fnmatch.fnmatch(subject, pattern)
                   for node, pattern, _reason in self.manifest.exclusions())

    def get_sync_targets(self, data_type: str, config_key: str | None = None,
                         path: str | None = None) -> list[str]:
        coordinator = self.config.coordinator.name
        if self.node == coordinator:
            return []
        if self.is_down(coordinator) or self._excluded(coordinator, data_type, path):
            return []
        return [coordinator]

    def health_check(self) -> HealthCheckResult:
        coordinator = self.config.coordinator.name
        if self.node != coordinator and self.is_down(coordinator):
            return HealthCheckResult(False, f"coordinator {coordinator} is down",
                                     {"coordinator": coordinator})
        return HealthCheckResult(True, "routing", {"coordinator": coordinator})
