"""Vouches: ask the holders of an artifact version, now, whether they really hold its bytes.

``VouchClient.counted(art)`` asks every node the manifest says holds the version
(``GET /v1/vouch/...``, ``engine.server.vouch``: each re-reads and hashes its stored copy)
and returns the answers that count as distinct copies (``counting``). Deletion (the
Cleaner) and every under-replicated count (Recovery) use it, so neither ever counts a copy
from the manifest's memory. A holder that answers it has no copy, or one with other bytes,
loses its replica row; one that is not in the config any more (decommissioned) or does not
answer simply does not vouch (logged at most once a minute per holder).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp

from engine.manifest import Artifact

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

VOUCH_TIMEOUT_SECONDS = 30.0
VOUCH_HASH_RATE = 50 * 2**20
"""Bytes per second a holder is assumed to hash at least, for the vouch timeout."""


@dataclass(frozen=True)
class Vouch:
    """A holder's live answer that its stored bytes are this version."""

    node: str
    root_id: str
    provider: str
    ephemeral: bool


def counting(vouches: list[Vouch], own_root: str, *, ephemeral_count: bool = False,
             distinct_providers: bool = False) -> list[Vouch]:
    """The vouches that count as distinct copies (pure): one per data root id, never this
    node's own root, none from an ephemeral host unless the policy says so, and with
    ``distinct_providers`` one per provider. Sorted by node name."""
    seen_roots: set[str] = {own_root}
    seen_providers: set[str] = set()
    out: list[Vouch] = []
    for v in sorted(vouches, key=lambda v: v.node):
        if v.root_id in seen_roots or (v.ephemeral and not ephemeral_count):
            continue
        if distinct_providers and v.provider in seen_providers:
            continue
        seen_roots.add(v.root_id)
        seen_providers.add(v.provider)
        out.append(v)
    return out


class VouchClient:
    """Asks holders to vouch, on behalf of one node."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._noted: dict[str, float] = {}

    def remembered(self, art: Artifact, holders: set[str]) -> set[str]:
        """Of the nodes the manifest remembers holding ``art`` verified, those that would
        count if they vouched (the same rules as ``counting``, over their remembered root
        ids): what push and recovery aim at, never what a deletion trusts."""
        policy = self.node.config.sync_routing.policy(art.data_type)
        roots = {r.node: r.root_id for r in self.node.manifest.replicas(art)}
        remembered = []
        for name in holders:
            host = self.node.config.hosts.get(name)
            if host is not None and name != self.node.name:
                remembered.append(Vouch(name, roots.get(name) or f"node:{name}",
                                        host.provider, host.ephemeral))
        return {v.node for v in counting(remembered, self.node.root_id,
                                         ephemeral_count=policy.ephemeral_copies_count,
                                         distinct_providers=policy.distinct_providers)}

    async def counted(self, art: Artifact) -> list[Vouch]:
        """The live vouches for ``art`` that count towards its deletion (see ``counting``)."""
        holders = sorted({r.node for r in self.node.manifest.replicas(art)} - {self.node.name})
        answers = await asyncio.gather(*(self.ask(art, h) for h in holders))
        policy = self.node.config.sync_routing.policy(art.data_type)
        return counting([v for v in answers if v is not None], self.node.root_id,
                        ephemeral_count=policy.ephemeral_copies_count,
                        distinct_providers=policy.distinct_providers)

    async def ask(self, art: Artifact, holder: str) -> Vouch | None:
        """``holder``'s vouch, when it answers in its own name that the bytes it stores for
        this version hash, read now, to its SHA-256.

        A holder that answers it has no copy, or one with other bytes, loses its replica row
        here (so the push daemon sends a copy elsewhere); one that does not answer keeps it.
        A holder that is no longer in the config (decommissioned) does not vouch.
        """
        node = self.node
        host = node.config.hosts.get(holder)
        if host is None:
            self._note(holder, f"{holder} is not in the config any more: its copy of"
                       f" {art.key} does not count")
            return None
        url = f"{host.url}/v1/vouch/{art.data_type}/{quote(art.path)}"
        timeout = aiohttp.ClientTimeout(total=VOUCH_TIMEOUT_SECONDS + art.size / VOUCH_HASH_RATE)
        try:
            async with node.session.get(url, params={"origin": art.origin, "sha256": art.sha256},
                                        timeout=timeout) as resp:
                answer = await resp.json() if resp.status in (200, 404) else None
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            self._note(holder, f"{holder} could not vouch for {art.key}:"
                       f" {exc or type(exc).__name__}")
            return None
        if status == 200 and isinstance(answer, dict) and answer.get("node") == holder:
            if (answer.get("sha256") == art.sha256 and answer.get("size") == art.size
                    and answer.get("rehashed") is True and answer.get("root_id")):
                return Vouch(holder, str(answer["root_id"]), host.provider, host.ephemeral)
            log.warning("%s stores %s with sha256 %s, not %s: no longer counted", holder,
                        art.label, answer.get("sha256"), art.sha256)
            node.manifest.remove_replica(art.ident, holder)
        elif status == 404:
            log.warning("%s no longer stores %s: no longer counted", holder, art.label)
            node.manifest.remove_replica(art.ident, holder)
        else:
            self._note(holder, f"{holder} does not vouch for {art.key}: HTTP {status}")
        return None

    def _note(self, holder: str, message: str) -> None:
        """A holder that cannot vouch: logged at most once a minute per holder."""
        now = time.monotonic()
        if now - self._noted.get(holder, -math.inf) >= 60:
            self._noted[holder] = now
            log.info("%s", message)
