"""What the HTTP handlers use of the running node, and where they find it on the app.

The object and vouch handlers get ``Storage``: the few parts that receive, serve and hash
stored copies. The other handlers reach the node through ``NodeApi``, a Protocol listing
exactly what they use; ``engine.node.Node`` satisfies both (``make_app`` builds the first).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from engine.bandwidth import BandwidthCoordinator
from engine.config import ClusterConfig
from engine.copies import StoredCopies
from engine.events import EventBus, Payload
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest
from engine.paths import DataRoot
from engine.transfers import TransferTracker


class Rendered(Protocol):
    def render(self) -> bytes: ...


class GossipServing(Protocol):
    def serve_exchange(self, body: Any) -> dict[str, Any]: ...
    def serve_delta(self, body: Any) -> dict[str, Any]: ...


class SendStarter(Protocol):
    def start(self, origin: str, data_type: str, path: str, sha256: str,
              to: str) -> dict[str, Any]: ...


class NodeApi(Protocol):
    """What the status, control, event-stream and gossip handlers use of the node."""

    name: str
    config: ClusterConfig
    """The bearer token (every route but ``/health``), the cluster's hosts and strategies."""
    events: EventBus
    """Replayed and streamed by ``GET /v1/events`` (read at each request)."""
    manifest: ClusterManifest
    bandwidth: BandwidthCoordinator
    metrics: Rendered
    gossip: GossipServing | None
    """The gossip daemon (the gossip strategy only)."""
    sender: SendStarter
    """Pushes a stored copy another node asks for (``POST /v1/gossip/send``)."""

    def health_check(self) -> HealthCheckResult: ...
    def status(self) -> dict[str, Any]: ...
    def membership_view(self) -> dict[str, Any]: ...
    def list_artifacts(self, limit: int) -> dict[str, Any]: ...
    def request_priority_sync(self, reason: str, config_key: str | None) -> dict[str, Any]: ...
    def set_paused(self, paused: bool, by: str) -> dict[str, Any]: ...
    async def request_recovery(self, reason: str, by: str) -> dict[str, Any]: ...
    def start_verification(self, by: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Storage:
    """What the object and vouch handlers use: this node's data root and what is in it."""

    name: str
    """This node."""
    root_id: str
    """Its data root's id, named in every answer about a stored copy."""
    hosts: Collection[str]
    """The cluster's nodes (an origin must be one)."""
    data: DataRoot
    manifest: ClusterManifest
    copies: StoredCopies
    """Hashes (cached or now), quarantine."""
    transfers: TransferTracker
    uploads: set[Path]
    """The part files being received right now (shared with the partials' pruning)."""
    emit: Callable[[Payload], Any]
    refuses: Callable[[bool], str | None]
    """Backpressure: why a (non-urgent when False) upload is refused now, else None."""
    has_room_for: Callable[[int], bool]
    note_stored: Callable[[int], None]
    """Count bytes just stored until the next capacity refresh measures them."""
    chunk_bytes: int
    """How much of a body is read and written at a time."""
    integrity_check_max_bytes: int
    """Databases above this get SQLite's ``quick_check`` instead of ``integrity_check``."""


NODE_KEY: web.AppKey[NodeApi] = web.AppKey("node")
STORAGE_KEY: web.AppKey[Storage] = web.AppKey("storage")


def node_of(request: web.Request) -> NodeApi:
    return request.app[NODE_KEY]


def storage_of(request: web.Request) -> Storage:
    return request.app[STORAGE_KEY]
