"""Vouches: ask the holders of an artifact version, now, whether they really hold its bytes.

``VouchClient.counted(art)`` asks every node the manifest says holds the version
(``GET /v1/vouch/...``, ``engine.server.vouch``: each re-reads and hashes its stored copy)
and returns the answers that count as distinct copies (``counting``). Deletion (the
Cleaner) and an operator's recovery run use it for every version, so neither ever counts a
copy from the manifest's memory; the runs that add copies use it through a bounded recount
(``engine.recount``). A holder that answers it has no copy, or one with other bytes,
loses its replica row; one that is not in the config any more (decommissioned) or does not
answer simply does not vouch (logged at most once a minute per holder).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from engine.config.schema import DataTypePolicy, HostConfig
from engine.manifest import Artifact, ClusterManifest
from engine.peer_client import PeerClient, PeerError

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

    def __init__(self, name: str, root_id: str, *, manifest: ClusterManifest,
                 hosts: Mapping[str, HostConfig], policy: Callable[[str], DataTypePolicy],
                 peers: PeerClient) -> None:
        self.name = name
        """The asking node."""
        self.root_id = root_id
        """Its data root's id: a copy under it never counts."""
        self.manifest = manifest
        self.hosts = hosts
        """The configured nodes (provider, ephemeral); one missing is decommissioned."""
        self._policy = policy
        """A data type's policy (``sync_routing.policy``)."""
        self._peers = peers
        self._noted: dict[str, float] = {}

    def _counting(self, art: Artifact, vouches: list[Vouch],
                  alongside: bool = False) -> list[Vouch]:
        """``counting`` under ``art``'s policy. ``alongside``: this node's own copy counts
        with the others (an orphan's copies besides its origin, on the coordinator), so
        that a holder on its root or, with ``distinct_providers``, its provider adds none."""
        policy = self._policy(art.data_type)
        rules = {"ephemeral_count": policy.ephemeral_copies_count,
                 "distinct_providers": policy.distinct_providers}
        if not alongside:
            return counting(vouches, self.root_id, **rules)
        host = self.hosts.get(self.name)
        own = Vouch(self.name, self.root_id, host.provider if host else "", False)
        return [v for v in counting([own, *vouches], "", **rules) if v.node != self.name]

    def remembered(self, art: Artifact, holders: set[str], alongside: bool = False) -> set[str]:
        """Of the nodes the manifest remembers holding ``art`` verified, those that would
        count if they vouched (the same rules as ``counting``, over their remembered root
        ids; ``alongside`` as in ``_counting``): what push and recovery aim at, never what
        a deletion trusts."""
        roots = {r.node: r.root_id for r in self.manifest.replicas(art)}
        remembered = []
        for name in holders:
            host = self.hosts.get(name)
            if host is not None and name != self.name:
                remembered.append(Vouch(name, roots.get(name) or f"node:{name}",
                                        host.provider, host.ephemeral))
        return {v.node for v in self._counting(art, remembered, alongside)}

    async def counted(self, art: Artifact, skip: Callable[[str], bool] | None = None,
                      alongside: bool = False) -> list[Vouch]:
        """The live vouches for ``art`` that count towards its deletion (see ``counting``);
        holders ``skip`` names are not asked (a recount skips down nodes); ``alongside`` as
        in ``_counting``."""
        holders = sorted(h for h in {r.node for r in self.manifest.replicas(art)} - {self.name}
                         if skip is None or not skip(h))
        answers = await asyncio.gather(*(self.ask(art, h) for h in holders))
        return self._counting(art, [v for v in answers if v is not None], alongside)

    async def ask(self, art: Artifact, holder: str) -> Vouch | None:
        """``holder``'s vouch, when it answers in its own name that the bytes it stores for
        this version hash, read now, to its SHA-256.

        A holder that answers it has no copy, or one with other bytes, loses its replica row
        here (so the push daemon sends a copy elsewhere); one that does not answer keeps it.
        A holder that is no longer in the config (decommissioned) does not vouch.
        """
        host = self.hosts.get(holder)
        if host is None:
            self._note(holder, f"{holder} is not in the config any more: its copy of"
                       f" {art.key} does not count")
            return None
        try:
            answer = await self._peers.call(
                holder, "GET", f"/v1/vouch/{art.data_type}/{quote(art.path)}",
                params={"origin": art.origin, "sha256": art.sha256}, expect=(200, 404),
                timeout=VOUCH_TIMEOUT_SECONDS + art.size / VOUCH_HASH_RATE)
        except PeerError as exc:  # unreachable, another status, or not JSON: no vouch
            self._note(holder, f"{holder} could not vouch for {art.key}: {exc}")
            return None
        body = answer.body
        if answer.status == 200 and isinstance(body, dict) and body.get("node") == holder:
            if (body.get("sha256") == art.sha256 and body.get("size") == art.size
                    and body.get("rehashed") is True and body.get("root_id")):
                return Vouch(holder, str(body["root_id"]), host.provider, host.ephemeral)
            log.warning("%s stores %s with sha256 %s, not %s: no longer counted", holder,
                        art.label, body.get("sha256"), art.sha256)
            self.manifest.remove_replica(art.ident, holder)
        elif answer.status == 404:
            log.warning("%s no longer stores %s: no longer counted", holder, art.label)
            self.manifest.remove_replica(art.ident, holder)
        else:
            self._note(holder, f"{holder} does not vouch for {art.key}: HTTP {answer.status}")
        return None

    def _note(self, holder: str, message: str) -> None:
        """A holder that cannot vouch: logged at most once a minute per holder."""
        now = time.monotonic()
        if now - self._noted.get(holder, -math.inf) >= 60:
            self._noted[holder] = now
            log.info("%s", message)
