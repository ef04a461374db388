"""RemoteRehome: the coordinator re-homes orphans it does not hold itself, through a holder.

An orphan is a version whose origin can no longer push it (down, deleted that source, or
superseded it). ``Recovery.rehome`` pushes the ones the coordinator holds from its own copy.
The others -- placed on CPU or GPU nodes while the coordinator was down, say -- would stay
short of copies for good once a holder loses one (a rolled-back disk, a quarantine). So
every sync cycle the coordinator, which learns every holder's rows by deltas, asks a holder
it believes verified (``POST /v1/gossip/send``) to push its copy to the replica targets the
version lacks; the holder sends only a copy it can stand behind and the receiver verifies.
Each (version, target) is asked at most once per ``REASK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import aiohttp

from engine.manifest import Artifact

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

REASK_SECONDS = 60.0


class RemoteRehome:
    """Asks holders to send orphans on; owned by the coordinator's Recovery."""

    def __init__(self, node: "Node", required: int) -> None:
        self.node = node
        self.required = required
        self._asked: dict[tuple[tuple[str, str, str, str], str], float] = {}
        self.asked_total = 0
        """Send requests a holder accepted."""

    def short(self) -> list[tuple[Artifact, set[str]]]:
        """Orphans this node holds no copy of, with the holders that count (from memory:
        the same counting rules as deletion), at least one and fewer than required."""
        manifest, me, membership = self.node.manifest, self.node.name, self.node.membership
        if membership is None:
            return []
        found = []
        for origin in sorted(n for n in self.node.config.hosts if n != me):
            down = membership.is_down(origin)
            gone = manifest.deleted_sources(origin)
            holders = manifest.verified_holders_by_artifact(origin, versions=True)
            for art in manifest.artifacts(origin=origin, versions=True):
                held = holders.get(art.ident, set()) - {origin}
                if me in held or not held or not (down or art.ident in gone or art.superseded):
                    continue
                counted = self.node.vouches.remembered(art, held)
                if counted and len(counted) < self.required:
                    found.append((art, counted))
        return found

    async def run(self) -> int:
        """One round; returns the send requests accepted."""
        accepted = 0
        now = time.monotonic()
        for art, held in self.short():
            need = self.required - len(held)
            targets = self.node.router.replica_targets(
                art.data_type, art.path, need, exclude=held | {art.origin}, origin=art.origin)
            sources = [h for h in sorted(held) if not self.node.view.is_down(h)]
            for target in targets:
                key = (art.ident, target)
                if not sources or now - self._asked.get(key, -REASK_SECONDS) < REASK_SECONDS:
                    continue
                self._asked[key] = now
                if await self._ask(sources[0], art, target):
                    accepted += 1
        self.asked_total += accepted
        return accepted

    async def _ask(self, source: str, art: Artifact, target: str) -> bool:
        body = {"origin": art.origin, "data_type": art.data_type, "path": art.path,
                "sha256": art.sha256, "to": target}
        url = f"{self.node.config.host(source).url}/v1/gossip/send"
        try:
            async with self.node.session.post(url, json=body,
                                              timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status == 202:
                    log.info("re-homing %s: %s asked to send it to %s", art.label, source,
                             target)
                    return True
                log.warning("re-homing %s: %s refused to send it to %s (HTTP %d)", art.label,
                            source, target, resp.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("re-homing %s: %s unreachable: %s", art.label, source,
                        type(exc).__name__)
        return False
