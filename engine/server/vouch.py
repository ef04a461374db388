"""``GET /v1/vouch/{data_type}/{path}?origin=O&sha256=S``: a holder vouches for its copy, now.

Before a node deletes a source it asks every holder this, at that moment. The holder reads
the bytes it stores for that version (``<data_type>/@<origin>/…v<sha16>…``) and hashes
them now: never from a cached hash, whatever the config says (there is no option for one).
The answer names the holder and its data root, so a vouch cannot be borrowed and two hosts
on one data root count once:

    200 {"node", "root_id", "origin", "data_type", "path", "sha256", "size", "hashed_at",
         "rehashed": true}
        ``sha256`` is what the bytes hash to now; a copy that does not match ``S`` is
        quarantined here at once (REPLICA_QUARANTINED) and the answer says so
        (``quarantined_to``)
    404 {"error"}   no stored copy of that version (never a guess from the manifest)
    400 {"error"}   a bad path, origin or sha256, or the removed ``max_age``

Hashing waits for one of the node's ``push.hash_concurrency`` hash slots.
"""

from __future__ import annotations

from aiohttp import web

from engine.paths import UnsafePath
from engine.server.context import storage_of

_HEX = frozenset("0123456789abcdef")


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=web.json_response({"error": message}).text,
                  content_type="application/json")


async def vouch(request: web.Request) -> web.Response:
    store = storage_of(request)
    data_type, rel = request.match_info["data_type"], request.match_info["path"]
    if "max_age" in request.query:
        raise _error(web.HTTPBadRequest, "max_age is no longer accepted: a vouch always"
                     " re-reads the stored bytes")
    origin = request.query.get("origin", "")
    sha = request.query.get("sha256", "").lower()
    if origin not in store.hosts:
        raise _error(web.HTTPBadRequest, f"origin must be a node of this cluster, not"
                     f" {origin[:80]!r}")
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise _error(web.HTTPBadRequest, "sha256 must be 64 hex digits")
    ident = (origin, data_type, rel, sha)
    try:
        final = store.copies.path(ident)
    except UnsafePath as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
    missing = _error(web.HTTPNotFound, f"{store.name} stores no copy of {origin}'s"
                     f" {data_type}/{rel} @{sha[:12]}")
    try:
        actual, hashed_at = await store.copies.verify(ident, final, now=True)
        size = final.stat().st_size
    except FileNotFoundError:
        raise missing from None
    except OSError as exc:
        raise _error(web.HTTPServiceUnavailable, f"cannot read the copy: {exc}") from None
    answer = {"node": store.name, "root_id": store.root_id, "origin": origin,
              "data_type": data_type, "path": rel, "sha256": actual, "size": size,
              "hashed_at": hashed_at, "rehashed": True}
    if actual != sha:
        answer["quarantined_to"] = store.copies.quarantine(ident, final, actual)
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/vouch/{data_type}/{path:.+}", vouch)
