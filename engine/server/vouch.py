"""``GET /v1/vouch/{data_type}/{path}?max_age=S``: a holder vouches for its stored copy, now.

Before a node deletes a source it asks every holder this, at that moment. The holder
answers from the bytes it stores: it re-hashes them, or answers from its own hashing
made within the last ``max_age`` seconds while the file is unchanged since (``max_age=0``
always re-hashes). The answer names the holder, so a vouch cannot be borrowed:

    200 {"node", "data_type", "path", "sha256", "size", "verified_at", "rehashed"}
    404 {"error"}   no stored copy under that name (never a guess from the manifest)
    400 {"error"}   a bad path or max_age

A stored copy here is the file under its final name; a source this node produced counts
the same way (a deleting node never asks itself).
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from engine.paths import UnsafePath
from engine.server.context import node_of

MAX_AGE_LIMIT = 7 * 24 * 3600.0


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=web.json_response({"error": message}).text,
                  content_type="application/json")


def _max_age(request: web.Request, default: float) -> float:
    raw = request.query.get("max_age")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _error(web.HTTPBadRequest, f"max_age is not a number: {raw[:40]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_AGE_LIMIT:
        raise _error(web.HTTPBadRequest, f"max_age must be in 0..{MAX_AGE_LIMIT:g} seconds")
    return value


async def vouch(request: web.Request) -> web.Response:
    node = node_of(request)
    data_type, rel = request.match_info["data_type"], request.match_info["path"]
    try:
        final = node.data.object_path(data_type, rel)
    except UnsafePath as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
    max_age = _max_age(request, node.config.push.vouch_max_age_seconds)
    if not final.is_file():
        raise _error(web.HTTPNotFound, f"{node.name} stores no {data_type}/{rel}")
    asked = time.time()
    try:
        sha, verified_at = await node.local_verification(data_type, rel, final, max_age=max_age)
        size = final.stat().st_size
    except FileNotFoundError:
        raise _error(web.HTTPNotFound, f"{node.name} stores no {data_type}/{rel}") from None
    return web.json_response({"node": node.name, "data_type": data_type, "path": rel,
                              "sha256": sha, "size": size, "verified_at": verified_at,
                              "rehashed": verified_at >= asked})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/vouch/{data_type}/{path:.+}", vouch)
