"""SyncRouter: decides which nodes an artifact should go to.

This first version knows the push-from-generator rule: a producing node sends
every finished artifact to the coordinator, unless the coordinator is excluded
for that artifact or down. Capacity-, policy- and backpressure-aware routing for
the other strategies builds on the same ``get_sync_targets`` call.

``replica_targets`` names further nodes for recovery (bringing an artifact up to
``push.min_copies_before_delete`` verified copies): every host but the origin, this
node and the current holders; never a down, excluded or ephemeral host, nor one whose
known free space is too small; most free space first where known, else config order
with coordinator and CPU nodes before GPU nodes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from engine.config import ClusterConfig
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest


_ROLE_RANK = {"coordinator": 0, "cpu": 1, "gpu": 2}
"""Without capacity figures, replicas go to non-GPU nodes first (they are not spot hosts
filling their disks with self-play)."""


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

    def replica_targets(self, data_type: str, path: str, need: int,
                        exclude: Iterable[str] = ()) -> list[str]:
        """Up to ``need`` nodes that should receive a further copy of ``data_type/path``.

        ``exclude`` names nodes that already hold it (or are being sent it). The artifact's
        origin (from the manifest) and this node never qualify.
        """
        if need <= 0:
            return []
        art = self.manifest.get_artifact(data_type, path)
        skip = {self.node, *exclude, *([art.origin] if art else [])}
        capacity = self.manifest.capacity()
        order = {name: i for i, name in enumerate(self.config.hosts)}
        scored: list[tuple[tuple[float, ...], str]] = []
        for name, host in self.config.hosts.items():
            if (name in skip or host.ephemeral or self.is_down(name)
                    or self._excluded(name, data_type, path)):
                continue
            cap = capacity.get(name)
            if cap is not None:
                free = cap["total_bytes"] - cap["used_bytes"]
                if art is not None and free < art.size:
                    continue  # known to have no room: it would only answer 507
                scored.append(((0, -free, order[name]), name))
            else:
                scored.append(((1, _ROLE_RANK[host.role], order[name]), name))
        return [name for _key, name in sorted(scored)[:need]]

    def health_check(self) -> HealthCheckResult:
        coordinator = self.config.coordinator.name
        if self.node != coordinator and self.is_down(coordinator):
            return HealthCheckResult(False, f"coordinator {coordinator} is down",
                                     {"coordinator": coordinator})
        return HealthCheckResult(True, "routing", {"coordinator": coordinator})
