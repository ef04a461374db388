"""RemoteRehome: the coordinator re-homes orphans it does not hold itself, through a holder.

An orphan is a version whose origin can no longer push it (down, deleted that source, or
superseded it). ``Recovery.rehome`` pushes the ones the coordinator holds from its own copy.
The others -- placed on CPU or GPU nodes while the coordinator was down, say -- would stay
short of copies for good once a holder loses one (a rolled-back disk, a quarantine, a
holder gone for good). So every sync cycle the coordinator, which learns every holder's
rows by deltas, recounts them (``engine.recount``: down holders never count, and a budget of
those the rows call sufficient is asked live) and asks a holder that counts
(``POST /v1/gossip/send``) to push its copy to the replica targets the version lacks; the
holder sends only a copy it can stand behind and the receiver verifies.
Each (version, target) is asked at most once per ``REASK_SECONDS``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from engine.manifest import Artifact, ClusterManifest
from engine.peer_client import PeerClient, PeerError
from engine.ratelog import RateLimitedLog
from engine.recount import RECOUNT_BUDGET, Count, Recount
from engine.router import SyncRouter

log = logging.getLogger(__name__)

REASK_SECONDS = 60.0


class RemoteRehome:
    """Asks holders to send orphans on; owned by the coordinator's Recovery."""

    def __init__(self, name: str, required: int, nodes: Iterable[str], *,
                 manifest: ClusterManifest, recount: Recount, router: SyncRouter,
                 is_down: Callable[[str], bool], peers: PeerClient) -> None:
        self.name = name
        """The coordinator's node name."""
        self.required = required
        """Verified copies wanted on nodes other than the origin."""
        self.origins = sorted(n for n in nodes if n != name)
        """The nodes whose orphans are looked after (every other node)."""
        self.manifest = manifest
        self.recount = recount
        """Counts an orphan's copies: remembered up holders, and live when they seem enough."""
        self.router = router
        self._is_down = is_down
        """Membership's verdict: a down origin's versions are orphans; a down holder is not
        asked to send."""
        self._peers = peers
        self._rated = RateLimitedLog(log)
        self._asked: dict[tuple[tuple[str, str, str, str], str], float] = {}
        self.asked_total = 0
        """Send requests a holder accepted."""

    def _candidates(self) -> list[tuple[Artifact, set[str]]]:
        """Orphans this node holds no copy of, each with the holders the manifest remembers
        verified (never the origin), at least one."""
        manifest, me = self.manifest, self.name
        found = []
        for origin in self.origins:
            down = self._is_down(origin)
            gone = manifest.deleted_sources(origin)
            holders = manifest.verified_holders_by_artifact(origin, versions=True)
            for art in manifest.artifacts(origin=origin, versions=True):
                held = holders.get(art.ident, set()) - {origin}
                if me not in held and held and (down or art.ident in gone or art.superseded):
                    found.append((art, held))
        return found

    async def short(self, budget: int = 0) -> list[Count]:
        """Those orphans with fewer than the required copies that count, as a recount finds
        them (``engine.recount``: at most ``budget`` asked live); one with no holder left
        that counts has nothing to send it from."""
        counts = await self.recount.short(self._candidates(), self.required, budget=budget,
                                          rotate=True)
        for c in counts:
            if not c.holders:
                self._rated.warning(f"none:{c.artifact.key}", "re-homing %s: no holder can"
                                    " vouch for it now (%s did not): nothing to send it from",
                                    c.artifact.label, ", ".join(sorted(c.silent)) or "none")
        return [c for c in counts if c.holders]

    async def run(self) -> int:
        """One round; returns the send requests accepted."""
        accepted = 0
        now = time.monotonic()
        for count in await self.short(RECOUNT_BUDGET):
            art, held = count.artifact, set(count.holders)
            need = self.required - len(held)
            targets = self.router.replica_targets(  # this node too: it lacks a copy
                art.data_type, art.path, need, exclude=held | count.silent | {art.origin},
                origin=art.origin, include_self=True)
            sources = [h for h in sorted(held) if not self._is_down(h)]
            for target in targets:
                key = (art.ident, target)
                if not sources or now - self._asked.get(key, -REASK_SECONDS) < REASK_SECONDS:
                    continue
                self._asked[key] = now
                for source in sources:  # one that refuses or is unreachable: the next
                    if await self._ask(source, art, target):
                        accepted += 1
                        break
        self.asked_total += accepted
        return accepted

    async def _ask(self, source: str, art: Artifact, target: str) -> bool:
        body = {"origin": art.origin, "data_type": art.data_type, "path": art.path,
                "sha256": art.sha256, "to": target}
        try:
            await self._peers.post(source, "/v1/gossip/send", body, timeout=10, expect=(202,),
                                   parse=False)
        except PeerError as exc:
            if exc.unreachable:
                log.warning("re-homing %s: %s", art.label, exc)
            else:
                log.warning("re-homing %s: %s refused to send it to %s (HTTP %s)", art.label,
                            source, target, exc.status)
            return False
        log.info("re-homing %s: %s asked to send it to %s", art.label, source, target)
        return True
