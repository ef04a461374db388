"""The node's HTTP API (aiohttp): routes, bearer-token auth, JSON errors.

    GET  /health                      HealthCheckResult (no token needed)
    GET  /status                      node, role, disk, artifacts, transfers, strategy, paused
    GET  /bandwidth/status            BandwidthCoordinator allocations and rates
    GET  /metrics                     Prometheus text format
    GET  /v1/manifest?since=SEQ       ClusterManifest rows changed after SEQ
    GET  /v1/events?since=SEQ         server-sent events
    GET  /v1/cluster                  membership as this node sees it
    GET  /v1/artifacts?limit=N        newest artifacts (by mtime) with their replicas
    GET  /v1/vouch/{data_type}/{path}?max_age=S   the holder's SHA-256 of its copy, hashed now
    PUT|GET|HEAD /v1/objects/{data_type}/{path}
    POST /v1/control/{priority-sync,pause,resume}   what the SyncFacade asks of a node
    POST /v1/control/recover          push under-replicated artifacts up to min_copies (202)
    POST /v1/control/verify           re-hash every replica held; 409 while one runs (202)
    POST /v1/gossip[/delta|/send]     gossip exchange, follow-up delta, pull request (gossip.py)
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from aiohttp import web

from engine.capacity import DiskUsage
from engine.copies import StoredCopies
from engine.daemons.recovery import DEFAULT_REASON
from engine.daemons.verification import VerificationRunning
from engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine.paths import DataRoot
from engine.server import gossip, objects, staged, vouch
from engine.server.context import NODE_KEY, STORAGE_KEY, NodeApi, Storage, node_of
from engine.server.events_stream import stream_events
from engine.transfers import TransferTracker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/health"})
ARTIFACTS_LIMIT = (1, 5000)
ARTIFACTS_DEFAULT = 200


_node = node_of


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in OPEN_PATHS:
        expected = f"Bearer {_node(request).config.token}"
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "missing or wrong bearer token"}),
                content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    result = _node(request).health_check()
    return web.json_response(result.to_dict(), status=200 if result.is_healthy else 503)


async def status(request: web.Request) -> web.Response:
    return web.json_response(_node(request).status())


async def bandwidth_status(request: web.Request) -> web.Response:
    return web.json_response(_node(request).bandwidth.status())


async def metrics(request: web.Request) -> web.Response:
    body = _node(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def manifest(request: web.Request) -> web.Response:
    try:
        since = int(request.query.get("since", "0"))
        limit = int(request.query.get("limit", "5000"))
    except ValueError:
        raise web.HTTPBadRequest(text="since and limit must be integers") from None
    if since < 0 or not 1 <= limit <= 50000:
        raise web.HTTPBadRequest(text="since must be >= 0 and limit in 1..50000")
    return web.json_response(_node(request).manifest.changes_since(since, limit))


async def cluster(request: web.Request) -> web.Response:
    return web.json_response(_node(request).membership_view())


async def artifacts(request: web.Request) -> web.Response:
    low, high = ARTIFACTS_LIMIT
    raw = request.query.get("limit", str(ARTIFACTS_DEFAULT))
    try:
        limit = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"limit must be an integer, not {raw[:40]!r}") from None
    if not low <= limit <= high:
        raise web.HTTPBadRequest(text=f"limit must be in {low}..{high}")
    return web.json_response(_node(request).list_artifacts(limit))


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


async def control_priority_sync(request: web.Request) -> web.Response:
    body = await _json_body(request)
    reason = body.get("reason")
    config_key = body.get("config_key")
    if not isinstance(reason, str) or not reason:
        raise web.HTTPBadRequest(text="reason (a non-empty string) is required")
    if config_key is not None and not isinstance(config_key, str):
        raise web.HTTPBadRequest(text="config_key must be a string")
    node = _node(request)
    return web.json_response(node.request_priority_sync(reason, config_key), status=202)


async def control_pause(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return web.json_response(_node(request).set_paused(True, str(body.get("by", "api"))))


async def control_resume(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return web.json_response(_node(request).set_paused(False, str(body.get("by", "api"))))


def _optional_str(body: dict, name: str, default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise web.HTTPBadRequest(text=f"{name} must be a non-empty string")
    return value


async def control_recover(request: web.Request) -> web.Response:
    body = await _json_body(request)
    reason = _optional_str(body, "reason", DEFAULT_REASON)
    by = _optional_str(body, "by", "api")
    return web.json_response(await _node(request).request_recovery(reason, by), status=202)


async def control_verify(request: web.Request) -> web.Response:
    body = await _json_body(request)
    by = _optional_str(body, "by", "api")
    try:
        answer = _node(request).start_verification(by)
    except VerificationRunning as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    return web.json_response(answer, status=202)


class Refusing(Protocol):
    def refuses(self, urgent: bool) -> str | None: ...


class ServedNode(NodeApi, Protocol):
    """``NodeApi`` and the parts ``Storage`` is made of (``engine.node.Node``)."""

    root_id: str
    data: DataRoot
    copies: StoredCopies
    transfers: TransferTracker
    uploads_in_progress: set[Path]
    backpressure: Refusing
    usage: DiskUsage


def storage(node: ServedNode) -> Storage:
    """The parts of ``node`` the object and vouch handlers use."""
    transfer = node.config.transfer
    return Storage(node.name, node.root_id, node.config.hosts, node.data, node.manifest,
                   node.copies, node.transfers, node.uploads_in_progress, node.events.emit,
                   node.backpressure.refuses, node.usage.has_room_for, node.usage.note_stored,
                   transfer.chunk_bytes, transfer.integrity_check_max_bytes)


def make_app(node: ServedNode) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=1 << 20)
    app[NODE_KEY] = node
    app[STORAGE_KEY] = storage(node)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/bandwidth/status", bandwidth_status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/manifest", manifest)
    app.router.add_get("/v1/events", stream_events)
    app.router.add_get("/v1/cluster", cluster)
    app.router.add_get("/v1/artifacts", artifacts)
    app.router.add_post("/v1/control/priority-sync", control_priority_sync)
    app.router.add_post("/v1/control/pause", control_pause)
    app.router.add_post("/v1/control/resume", control_resume)
    app.router.add_post("/v1/control/recover", control_recover)
    app.router.add_post("/v1/control/verify", control_verify)
    objects.add_routes(app)
    staged.add_routes(app)
    vouch.add_routes(app)
    gossip.add_routes(app)
    return app
