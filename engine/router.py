"""SyncRouter: which nodes an artifact goes to from this node, by strategy and live state.

A node is *eligible* for ``(data_type, path)`` when it is up, not excluded (the manifest's
exclusion rules, ``sync_routing.exclude_patterns``), below ``max_disk_usage_percent`` by the
capacity the cluster view refreshes (at most every 30 s), allowed by the data type's policy,
its circuit breaker lets a transfer through, and it does not announce backpressure (a normal
sync to a held node waits; an urgent one goes elsewhere). Eligible nodes are ordered by ``priority_hosts``, then free
space, then bandwidth limit, then config order.

``get_sync_targets(data_type, config_key, path, urgent=)`` by this node's strategy:

    push_from_generator  the coordinator (and, when the type's policy sets replication_target
                         N, N-1 more eligible durable nodes). Held (nothing) while it is down,
                         backpressured, breaker-open or full; an urgent sync then goes to the
                         best eligible durable node instead.
    ephemeral            the coordinator, else the best eligible durable (non-ephemeral) node:
                         a spot host never waits for one target.
    broadcast            data types whose policy says ``broadcast``: every eligible node;
                         other types as push_from_generator.
    gossip               nothing is pushed (peers pull, ``should_hold``), except to the
                         coordinator when a policy names it.

The coordinator is a gossip or broadcast target only when the data type's policy names it
(``roles: [coordinator]`` or ``hosts: [<name>]``). Gossip placement (``should_hold``): every
eligible node for ``replication_target: all``, else the first ``replication_target`` of the
eligible gossip nodes ranked by priority_hosts, then rendezvous hash of the artifact — the
same ranking on every node, so nodes agree on who holds what without talking.

Events: NODE_RECOVERED (send to that node again: its breaker closes and the daemon wakes),
BACKPRESSURE_ACTIVATED (hold non-urgent syncs to it), BACKPRESSURE_RELEASED (resume), from
this node's bus (``on_event``) and, for other nodes, through the cluster view's refresh.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.cluster_view import ClusterView
from engine.config import ClusterConfig
from engine.daemons.breaker import Breakers
from engine.events import Event, EventType
from engine.health import HealthCheckResult
from engine.manifest import Artifact, ClusterManifest

_ROLE_RANK = {"coordinator": 0, "cpu": 1, "gpu": 2}
"""Replicas go to non-GPU nodes first (they are not spot hosts filling their disks with
self-play); free space orders nodes of one role."""


@dataclass
class Route:
    """One routing answer: where to send now, and which wanted targets are held and why."""

    targets: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    """Target -> reason (``down``, ``backpressure:<why>``, ``breaker open``, ``full``)."""


class SyncRouter:
    """Where should ``(data_type, config_key)`` go from this node?"""

    def __init__(self, config: ClusterConfig, node: str, manifest: ClusterManifest,
                 view: ClusterView, breakers: Breakers,
                 own_percent: Callable[[], float] = lambda: 0.0,
                 wake: Callable[[str], None] = lambda _reason: None) -> None:
        self.config = config
        self.node = node
        self.manifest = manifest
        self.view = view
        """Down nodes and backpressure as this node knows them."""
        self.breakers = breakers
        self.own_percent = own_percent
        """This node's disk usage in percent (gossip holds nothing above the limit)."""
        self.wake = wake
        """Asks the sync daemon for a cycle now (a target came back or released)."""
        self.strategy = config.strategy_for(node)
        """This node's strategy: what ``get_sync_targets`` answers for."""
        self.routing = config.sync_routing
        self.counts = {"recovered": 0, "backpressure_activated": 0, "backpressure_released": 0}
        """Events the router acted on."""
        self._rows_seq = -1
        self._capacity: dict[str, dict[str, Any]] = {}
        self._exclusions: list[tuple[str, str, str]] = []

    # -- events -----------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """The node's bus listener for NODE_RECOVERED and BACKPRESSURE_*."""
        payload = event.payload
        name = getattr(payload, "node", None)
        if not isinstance(name, str) or name == self.node:
            return
        if event.type is EventType.NODE_RECOVERED:
            self.node_recovered(name)
        elif event.type is EventType.BACKPRESSURE_ACTIVATED:
            self.backpressure(name, getattr(payload, "reason", "announced"))
        elif event.type is EventType.BACKPRESSURE_RELEASED:
            self.backpressure(name, None)

    def node_recovered(self, name: str) -> None:
        """``name`` is back: it is a target again, its breaker closes, pending syncs go now."""
        self.view.down.discard(name)
        self.breakers.success(name)
        self.counts["recovered"] += 1
        self.wake(f"node_recovered:{name}")

    def backpressure(self, name: str, reason: str | None) -> None:
        """``name`` announced backpressure (``reason``) or released it (None)."""
        if reason is None:
            if self.view.backpressure.pop(name, None) is not None:
                self.counts["backpressure_released"] += 1
                self.wake(f"backpressure_released:{name}")
        elif self.view.backpressure.get(name) != reason:
            self.view.backpressure[name] = reason
            self.counts["backpressure_activated"] += 1

    # -- eligibility ------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Read the manifest's capacity rows and exclusion rules again if it changed since
        the last answer (each public answer asks once; a route asks about every node)."""
        seq = self.manifest.seq
        if self._rows_seq != seq:
            self._rows_seq = seq
            self._capacity = self.manifest.capacity()
            self._exclusions = self.manifest.exclusions()

    def _excluded(self, target: str, data_type: str, path: str | None) -> bool:
        subject = f"{data_type}/{path or ''}"
        if path and any(fnmatch.fnmatch(path, p) for p in self.routing.exclude_patterns):
            return True
        return any(node == target and fnmatch.fnmatch(subject, pattern)
                   for node, pattern, _reason in self._exclusions)

    def _percent(self, name: str) -> float | None:
        cap = self._capacity.get(name)
        if not cap or not cap["total_bytes"]:
            return None
        return 100.0 * cap["used_bytes"] / cap["total_bytes"]

    def _free(self, name: str) -> int | None:
        cap = self._capacity.get(name)
        return None if cap is None else cap["total_bytes"] - cap["used_bytes"]

    def policy_allows(self, target: str, data_type: str, spread: bool) -> bool:
        """May ``target`` hold ``data_type``? ``spread``: by gossip or broadcast, where the
        coordinator counts only when the policy names it."""
        policy = self.routing.policy(data_type)
        if target in policy.exclude_hosts:
            return False
        host = self.config.host(target)
        if not spread and host.is_coordinator:
            return True  # the collection point of push_from_generator and ephemeral
        return target in policy.hosts or host.role in policy.roles

    def _hold_reason(self, target: str) -> str | None:
        """Why ``target`` is held right now (None: it may be sent to)."""
        if self.view.is_down(target):
            return "down"
        percent = self._percent(target)
        if percent is not None and percent >= self.routing.max_disk_usage_percent:
            return "full"
        if not self.breakers.allow(target):
            return "breaker open"
        pressure = self.view.backpressure.get(target)
        if pressure is not None:
            return f"backpressure:{pressure}"
        return None

    def _order(self, names: Iterable[str]) -> list[str]:
        priority = {n: i for i, n in enumerate(self.routing.priority_hosts)}
        config_order = {n: i for i, n in enumerate(self.config.hosts)}

        def key(name: str) -> tuple[float, ...]:
            free = self._free(name)
            return (priority.get(name, len(priority)), 0 if free is not None else 1,
                    -(free or 0), -self.config.bandwidth_limit_mbps(name), config_order[name])

        return sorted(names, key=key)

    def eligible(self, data_type: str, path: str | None = None, *, spread: bool,
                 durable: bool = False) -> Route:
        """Every eligible node (ordered) and, in ``held``, the allowed ones held back now."""
        self._refresh()
        route = Route()
        allowed = [n for n, host in self.config.hosts.items()
                   if n != self.node and not (durable and host.ephemeral)
                   and self.policy_allows(n, data_type, spread)
                   and not self._excluded(n, data_type, path)]
        for name in self._order(allowed):
            reason = self._hold_reason(name)
            if reason is None:
                route.targets.append(name)
            else:
                route.held[name] = reason
        return route

    # -- push targets -----------------------------------------------------------------------
    def route(self, data_type: str, config_key: str | None = None, path: str | None = None,
              *, urgent: bool = False, origin: str | None = None) -> Route:
        """``get_sync_targets`` with the reasons for what is held."""
        self._refresh()
        policy = self.routing.policy(data_type)
        if self.strategy == "broadcast" and policy.broadcast:
            return self.eligible(data_type, path, spread=True)
        coordinator = self.config.coordinator.name
        if self.strategy == "gossip":
            if coordinator == self.node or not self.policy_allows(coordinator, data_type, True):
                return Route()
            return self._collect(data_type, path, urgent=False, origin=origin)
        if self.node == coordinator:
            return Route()
        return self._collect(data_type, path, urgent=urgent or self.strategy == "ephemeral",
                             origin=origin)

    def _collect(self, data_type: str, path: str | None, urgent: bool,
                 origin: str | None = None) -> Route:
        """The coordinator; while it is held, nothing (normal) or the best durable node
        (urgent). An excluded coordinator is no target at all."""
        coordinator = self.config.coordinator.name
        if not self.policy_allows(coordinator, data_type, False) or \
                self._excluded(coordinator, data_type, path):
            return Route()
        reason = self._hold_reason(coordinator)
        if reason is None:
            return Route([coordinator, *self._more_copies(data_type, path, coordinator)])
        route = Route(held={coordinator: reason})
        if urgent:
            art = self.manifest.get_artifact(data_type, path, origin or self.node) if path else None
            holding = self.manifest.verified_holders(art) if art else set()
            if coordinator in holding:
                return route  # it has it already: no copy elsewhere is needed
            others = [n for n in self.eligible(data_type, path, spread=False, durable=True).targets
                      if n != coordinator]
            # one durable copy is the aim: a node that holds it already stays the target
            route.targets = ([n for n in others if n in holding] or others)[:1]
        return route

    def _more_copies(self, data_type: str, path: str | None, first: str) -> list[str]:
        """Further durable targets when the data type's policy asks for more copies than the
        coordinator's (``replication_target``: a number, or ``all``); none by default."""
        want = self.routing.policy(data_type).replication_target
        if want is None or want == 1:
            return []
        others = [n for n in self.eligible(data_type, path, spread=True, durable=True).targets
                  if n != first]
        return others if want == "all" else others[:int(want) - 1]

    def get_sync_targets(self, data_type: str, config_key: str | None = None,
                         path: str | None = None, *, urgent: bool = False,
                         origin: str | None = None) -> list[str]:
        """The nodes to push ``data_type/path`` (of ``origin``, default this node) to now, in
        order (see the module doc)."""
        return self.route(data_type, config_key, path, urgent=urgent, origin=origin).targets

    def replica_targets(self, data_type: str, path: str, need: int,
                        exclude: Iterable[str] = (), origin: str | None = None,
                        include_self: bool = False) -> list[str]:
        """Up to ``need`` nodes that should receive a further copy of ``data_type/path``
        (recovery, disk pressure): eligible durable nodes, coordinator included, never the
        origin, this node (unless ``include_self``: the coordinator re-homing an orphan it
        holds no copy of, through a holder) or ``exclude`` (current holders), nor a node
        known to have no room; the coordinator, then CPU nodes, then GPU nodes (spot hosts
        filling their own disks with self-play), most free space first within each."""
        if need <= 0:
            return []
        self._refresh()
        art = self.manifest.get_artifact(data_type, path, origin or self.node)
        skip = {*exclude, origin or self.node} | (set() if include_self else {self.node})
        order = {name: i for i, name in enumerate(self.config.hosts)}
        scored: list[tuple[tuple[float, ...], str]] = []
        for name, host in self.config.hosts.items():
            if (name in skip or host.ephemeral or self._excluded(name, data_type, path)
                    or name in self.routing.policy(data_type).exclude_hosts
                    or self._hold_reason(name) is not None):
                continue
            free = self._free(name)
            if free is not None and art is not None and free < art.size:
                continue  # known to have no room: it would only answer 507
            scored.append(((_ROLE_RANK[host.role], free is None, -(free or 0), order[name]),
                           name))
        return [name for _key, name in sorted(scored)[:need]]

    # -- gossip -----------------------------------------------------------------------------
    def _gossip_members(self) -> list[str]:
        """Nodes that run the gossip strategy; the coordinator only when a policy names it."""
        coordinator = self.config.coordinator.name
        named = any(coordinator in p.hosts or "coordinator" in p.roles
                    for p in self.routing.policies.values())
        return [n for n in self.config.hosts if self.config.strategy_for(n) == "gossip"
                and (n != coordinator or named)]

    def gossip_peers(self) -> list[str]:
        """Gossip nodes this node may exchange manifest deltas with now."""
        return [n for n in self._gossip_members()
                if n != self.node and not self.view.is_down(n) and self.breakers.allow(n)]

    def should_hold(self, art: Artifact) -> bool:
        """Should this node hold a copy of ``art`` (a gossip node pulls it when True)?"""
        self._refresh()
        if art.origin == self.node or not self.policy_allows(self.node, art.data_type, True):
            return False
        if self._excluded(self.node, art.data_type, art.path) or \
                self.own_percent() >= self.routing.max_disk_usage_percent:
            return False
        policy = self.routing.policy(art.data_type)
        want = policy.replication_target or self.routing.replication_target
        if want == "all":
            return True
        members = [n for n in self._gossip_members()
                   if n != art.origin and self.policy_allows(n, art.data_type, True)
                   and not self._excluded(n, art.data_type, art.path)
                   and (n == self.node or not self.view.is_down(n))]
        priority = {n: i for i, n in enumerate(self.routing.priority_hosts)}
        ranked = sorted(members, key=lambda n: (priority.get(n, len(priority)),
                                                _rendezvous(art.key, n)))
        return self.node in ranked[:int(want)]

    def pull_sources(self, art: Artifact) -> list[str]:
        """Nodes to ask for a copy of ``art``: holders of a first-hand verified copy, then
        its origin (unless it deleted its source); never down or breaker-open ones."""
        holders = [r.node for r in self.manifest.replicas(art)
                   if r.verified_at is not None and r.node != art.origin]
        holders.sort(key=lambda n: _rendezvous(f"{art.key}:{self.node}", n))
        if art.ident not in self.manifest.deleted_sources(art.origin) and not art.superseded:
            holders.append(art.origin)
        return [n for n in holders if n != self.node and n in self.config.hosts
                and not self.view.is_down(n) and self.breakers.allow(n)]

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        return {"strategy": self.strategy, "view": self.view.to_dict(),
                "breakers": self.breakers.status(), **self.counts}

    def health_check(self) -> HealthCheckResult:
        details = {"strategy": self.strategy, "down": sorted(self.view.down),
                   "backpressure": sorted(self.view.backpressure),
                   "open_breakers": self.breakers.open_targets(),
                   "view_refreshed_at": self.view.refreshed_at}
        coordinator = self.config.coordinator.name
        if self.node != coordinator and self.view.is_down(coordinator) and \
                self.strategy == "push_from_generator":
            return HealthCheckResult(False, f"coordinator {coordinator} is down", details)
        if self.view.last_error and self.node != coordinator:
            return HealthCheckResult(True, f"routing on an old cluster view: {self.view.last_error}",
                                     details)
        held = details["open_breakers"]
        message = f"routing ({self.strategy})" + (f"; breaker open to {', '.join(held)}"
                                                  if held else "")
        return HealthCheckResult(True, message, details)


def _rendezvous(key: str, node: str) -> bytes:
    """Highest-random-weight rank of ``node`` for ``key`` (same on every node)."""
    return hashlib.sha256(f"{key}\0{node}".encode()).digest()
