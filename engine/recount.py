"""Recount: which versions are short of copies now, for the runs that add copies.

A deletion asks every holder, every time (``VouchClient.counted``). The runs that *add*
copies -- pressure pushes (``Recovery.shortfalls``) and the coordinator's re-homing of
orphans (``Recovery.rehome``, ``RemoteRehome``) -- decide what is short. The manifest says
whom to ask. Counting its rows alone would keep a copy counted after its holder went down,
lost it or let it rot before a scrub found it, and the version would stay short for good.
So a recount:

* never counts a holder this node's view calls down (``ClusterView.is_down``) or one no
  longer in the config, and applies deletion's counting rules (distinct roots, ephemeral
  hosts, providers) to the rest: a version that is short even so is short, and its pushes
  start without asking anyone;
* asks the holders of a version the manifest calls sufficiently copied, live, with the
  vouch a deletion uses (each holder re-reads and hashes its copy). Only the holders that
  vouch count, and a holder that answers it has no such copy loses its replica row.

Asking costs a read of every holder's copy, so it is bounded three ways:

* a version found sufficiently copied is asked about again only after ``RECOUNT_SECONDS``,
  one found short after ``SHORT_RECOUNT_SECONDS`` (meanwhile that live answer stands: a
  push that could not be placed is tried again without re-reading anything);
* one call asks about at most ``budget`` versions;
* all calls of a node together ask about at most ``RECOUNT_BYTES_PER_SECOND`` of the
  versions' sizes on average (a bucket of ``RECOUNT_BYTES``; a version bigger than the
  bucket is asked when the bucket is full, and the debt is paid off before the next).

Pressure pushes look at the oldest ``budget`` versions the rows call sufficient (the next
a cleanup deletes: they must really have their copies). Re-homing (``rotate``) asks the due
orphans that were asked longest ago first, never-asked ones first, so successive rounds go
round all of them. A stale answer only delays adding a copy; nothing is ever deleted on it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from engine.manifest import Artifact
from engine.vouches import VouchClient

Ident = tuple[str, str, str, str]

RECOUNT_BUDGET = 16
"""Versions one recount call asks about at most."""
RECOUNT_BYTES = 256 * 2**20
"""The byte bucket's size: what a node may ask about at once."""
RECOUNT_BYTES_PER_SECOND = 4 * 2**20
"""What a node asks about on average, at most (each byte is read on every holder)."""
RECOUNT_SECONDS = 300.0
"""A version found sufficiently copied live is asked about again only after this long."""
SHORT_RECOUNT_SECONDS = 60.0
"""A version found short live is asked about again only after this long."""
MAX_REMEMBERED = 200_000
"""Versions whose last answer is remembered (the oldest half is forgotten beyond it)."""


@dataclass(frozen=True)
class Count:
    """What a recount found for one version."""

    artifact: Artifact
    holders: frozenset[str]
    """The holders that count: live vouchers when asked, else the remembered, up ones."""
    live: bool
    """True when the holders were asked (now, or within ``SHORT_RECOUNT_SECONDS``)."""
    silent: frozenset[str] = frozenset()
    """Holders the manifest remembers whose answer did not count (no answer, a failing
    read, or one the counting rules leave out): no target for another copy."""


class Recount:
    """Bounded live recounts on behalf of one node."""

    def __init__(self, vouches: VouchClient, is_down: Callable[[str], bool], *,
                 recount_seconds: float = RECOUNT_SECONDS,
                 short_seconds: float = SHORT_RECOUNT_SECONDS,
                 bytes_per_second: float = RECOUNT_BYTES_PER_SECOND,
                 bucket_bytes: int = RECOUNT_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.vouches = vouches
        self.is_down = is_down
        """This node's view of which nodes are down (``ClusterView.is_down``)."""
        self.recount_seconds = recount_seconds
        self.short_seconds = short_seconds
        self.bytes_per_second = bytes_per_second
        self.bucket_bytes = bucket_bytes
        self._clock = clock
        self._tokens = float(bucket_bytes)
        self._filled_at = clock()
        self._asked: dict[Ident, tuple[float, Count | None]] = {}
        """Version -> when it was last asked and what was found: its Count when short."""
        self.asked_total = 0
        """Versions asked about live since start."""
        self.found_short_total = 0
        """Versions the manifest called sufficient that were short when asked."""

    def remembered(self, art: Artifact, holders: Iterable[str],
                   alongside: bool = False) -> set[str]:
        """Of ``holders`` (the manifest's), those that would count: up, configured, and by
        deletion's counting rules (``alongside``: next to this node's own copy)."""
        return self.vouches.remembered(art, {h for h in holders if not self.is_down(h)},
                                       alongside)

    def _due(self, ident: Ident, now: float) -> bool:
        last = self._asked.get(ident)
        if last is None:
            return True
        wait = self.short_seconds if last[1] is not None else self.recount_seconds
        return now - last[0] >= wait

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.bucket_bytes),
                           self._tokens + (now - self._filled_at) * self.bytes_per_second)
        self._filled_at = now

    async def short(self, candidates: Iterable[tuple[Artifact, set[str]]], need: int, *,
                    budget: int, rotate: bool = False, alongside: bool = False,
                    known: Mapping[Ident, set[str]] | None = None) -> list[Count]:
        """Of ``candidates`` (a version and the holders the manifest remembers, in the order
        wanted), those with fewer than ``need`` holders that count, in that order.

        ``known`` are live answers just taken for this node (a cleanup run's), used as they
        are. Of the others the manifest calls sufficient, those due are asked (at most
        ``budget``, within the byte bucket): the first ``budget`` of them in order, or with
        ``rotate`` the due ones asked longest ago first. One not due that was found short
        stays short with its last live answer. ``alongside``: this node's own copy counts
        with the others, by the same rules (``VouchClient._counting``), and ``need``
        includes it."""
        known = known or {}
        now = self._clock()
        self._refill(now)
        found: list[Count | None] = []
        sufficient: list[tuple[int, Artifact]] = []
        for art, held in candidates:
            if art.ident in known:
                live = known[art.ident]
                found.append(Count(art, frozenset(live), True, frozenset(held - live))
                             if len(live) + alongside < need else None)
                continue
            counted = self.remembered(art, held, alongside)
            if len(counted) + alongside < need:
                found.append(Count(art, frozenset(counted), False))
                continue
            last = self._asked.get(art.ident)
            if last is not None and last[1] is not None and not self._due(art.ident, now):
                if counted <= last[1].holders | last[1].silent:
                    found.append(last[1])  # found short a moment ago: still short
                    continue
                self._asked.pop(art.ident)  # a holder came since: ask again
            sufficient.append((len(found), art))
            found.append(None)
        if rotate:
            looked = [(at, a) for at, a in sufficient if self._due(a.ident, now)]
            looked.sort(key=lambda item: self._asked.get(item[1].ident, (-math.inf,))[0])
        else:
            looked = [(at, a) for at, a in sufficient[:budget] if self._due(a.ident, now)]
        asks: list[tuple[int, Artifact]] = []
        for at, art in looked[:budget]:
            if self._tokens <= 0:
                break
            self._tokens -= art.size
            asks.append((at, art))
        answers = await asyncio.gather(*(self.vouches.counted(a, skip=self.is_down,
                                                              alongside=alongside)
                                         for _, a in asks))
        self.asked_total += len(asks)
        for (at, art), vouched in zip(asks, answers):
            live = {v.node for v in vouched}
            count = None
            if len(live) + alongside < need:
                rows = {r.node for r in self.vouches.manifest.replicas(art)}
                silent = {h for h in rows - live - {self.vouches.name} if not self.is_down(h)}
                count = found[at] = Count(art, frozenset(live), True, frozenset(silent))
                self.found_short_total += 1
            self._remember(art.ident, now, count)
        return [c for c in found if c is not None]

    def _remember(self, ident: Ident, now: float, count: Count | None) -> None:
        self._asked[ident] = (now, count)
        if len(self._asked) > MAX_REMEMBERED:
            oldest = sorted(self._asked.items(), key=lambda item: item[1][0])
            for key, _ in oldest[:len(oldest) // 2]:
                del self._asked[key]

    def status(self) -> dict[str, float | int]:
        now = self._clock()
        return {"asked": self.asked_total, "found_short": self.found_short_total,
                "known_sufficient": sum(1 for t, c in self._asked.values()
                                        if c is None and now - t < self.recount_seconds),
                "bytes_per_second": self.bytes_per_second}
