"""Recount: which versions are short of copies now, for the runs that add copies.

A deletion asks every holder, every time (``VouchClient.counted``). The runs that *add*
copies -- pressure pushes (``Recovery.pressure_shortfalls``) and the coordinator's
re-homing of orphans (``Recovery.rehome``, ``RemoteRehome``) -- decide what is short. The
manifest says whom to ask. Counting its rows alone would keep a copy counted after its
holder went down, lost it or let it rot before a scrub found it, and the version would
stay short for good. So a recount:

* never counts a holder this node's view calls down (``ClusterView.is_down``) or one no
  longer in the config, and applies deletion's counting rules (distinct roots, ephemeral
  hosts, providers) to the rest: a version that is short even so is short, and its pushes
  start without asking anyone;
* asks the holders of a version the manifest calls sufficiently copied, live, with the
  vouch a deletion uses (each holder re-reads and hashes its copy). Only the holders that
  vouch count, and a holder that answers it has no such copy loses its replica row.

Asking costs a read of every holder's copy, so it is bounded: one recount asks about at
most ``budget`` versions and ``RECOUNT_BYTES`` of them, and a version found sufficiently
copied is asked about again only after ``RECOUNT_SECONDS``. Pressure pushes look at the
oldest ``budget`` (the next a cleanup would delete: they must really have their copies);
re-homing rotates through every orphan, a budget per sync cycle. A stale "sufficient"
only delays adding a copy; nothing is ever deleted on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from engine.manifest import Artifact
from engine.vouches import VouchClient

RECOUNT_BUDGET = 16
"""Versions the manifest calls sufficiently copied that one re-homing round asks about."""
RECOUNT_BYTES = 256 * 2**20
"""At most this much (the versions' sizes) is asked about in one recount (one version
always, however big)."""
RECOUNT_SECONDS = 300.0
"""A version found sufficiently copied live is asked about again only after this long."""


@dataclass(frozen=True)
class Count:
    """What a recount found for one version."""

    artifact: Artifact
    holders: frozenset[str]
    """The holders that count: live vouchers when asked, else the remembered, up ones."""
    live: bool
    """True when the holders were asked now."""
    silent: frozenset[str] = frozenset()
    """Holders the manifest remembers that were asked and did not vouch: no target for
    another copy (their row stays while they cannot say; a push there proves nothing)."""


class Recount:
    """Bounded live recounts on behalf of one node."""

    def __init__(self, vouches: VouchClient, is_down: Callable[[str], bool], *,
                 recount_seconds: float = RECOUNT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.vouches = vouches
        self.is_down = is_down
        """This node's view of which nodes are down (``ClusterView.is_down``)."""
        self.recount_seconds = recount_seconds
        self._clock = clock
        self._enough_at: dict[tuple[str, str, str, str], float] = {}
        self.asked_total = 0
        """Versions asked about live since start."""
        self.found_short_total = 0
        """Versions the manifest called sufficient that were short when asked."""

    def remembered(self, art: Artifact, holders: Iterable[str]) -> set[str]:
        """Of ``holders`` (the manifest's), those that would count: up, configured, and by
        deletion's counting rules."""
        return self.vouches.remembered(art, {h for h in holders if not self.is_down(h)})

    async def short(self, candidates: Iterable[tuple[Artifact, set[str]]], need: int, *,
                    budget: int, rotate: bool = False, max_bytes: int = RECOUNT_BYTES,
                    known: Mapping[tuple[str, str, str, str], set[str]] | None = None,
                    ) -> list[Count]:
        """Of ``candidates`` (a version and the holders the manifest remembers, in the order
        wanted), those with fewer than ``need`` holders that count, in that order.

        ``known`` are live answers just taken for this node (a cleanup run's), used as they
        are. Of the others the manifest calls sufficient, the first ``budget`` are looked at
        (``rotate``: the first ``budget`` due ones, so that successive calls go round them
        all) and those due are asked, up to ``max_bytes`` of their sizes."""
        known = known or {}
        now = self._clock()
        self._enough_at = {k: t for k, t in self._enough_at.items()
                           if now - t < self.recount_seconds}
        found: list[Count | None] = []
        asks: list[tuple[int, Artifact]] = []
        looked = asked_bytes = 0
        for art, held in candidates:
            if art.ident in known:
                live = known[art.ident]
                found.append(Count(art, frozenset(live), True, frozenset(held - live))
                             if len(live) < need else None)
                continue
            counted = self.remembered(art, held)
            if len(counted) < need:
                found.append(Count(art, frozenset(counted), False))
                continue
            due = art.ident not in self._enough_at
            if looked >= budget or (rotate and not due):
                continue
            looked += 1
            if due and (not asks or asked_bytes + art.size <= max_bytes):
                asks.append((len(found), art))
                asked_bytes += art.size
                found.append(None)
        answers = await asyncio.gather(*(self.vouches.counted(a, skip=self.is_down)
                                       for _, a in asks))
        self.asked_total += len(asks)
        for (at, art), vouched in zip(asks, answers):
            live = {v.node for v in vouched}
            if len(live) < need:
                asked = {r.node for r in self.vouches.manifest.replicas(art)}
                silent = {h for h in asked - live - {self.vouches.name}
                          if not self.is_down(h)}
                found[at] = Count(art, frozenset(live), True, frozenset(silent))
                self.found_short_total += 1
            else:
                self._enough_at[art.ident] = now
        return [c for c in found if c is not None]

    def status(self) -> dict[str, int]:
        return {"asked": self.asked_total, "found_short": self.found_short_total,
                "known_sufficient": len(self._enough_at)}
