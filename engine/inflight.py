"""InFlight: the (artifact version, target) pairs a push is under way or reserved for.

Node-wide: an auto sync cycle, a recovery or pressure run and a gossip send all claim the
pair before they push, so no two of them push the same version to the same target at
once, and cleanup leaves alone a version still being read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engine.manifest.store import Ident

Pair = tuple[Ident, str]
"""(artifact version ident, target node)."""


class InFlight:
    """The pairs claimed now; a claim is released by whoever made it."""

    def __init__(self) -> None:
        self._pairs: set[Pair] = set()

    def claim(self, pairs: Iterable[Pair]) -> set[Pair]:
        """Claim each pair not claimed yet; returns the ones this call claimed."""
        new = set(pairs) - self._pairs
        self._pairs |= new
        return new

    def claim_one(self, pair: Pair) -> bool:
        """Claim ``pair`` unless it is claimed already."""
        return bool(self.claim((pair,)))

    def release(self, pairs: Iterable[Pair]) -> None:
        self._pairs.difference_update(pairs)

    def idents(self) -> set[Ident]:
        """Versions some push is reading now."""
        return {ident for ident, _target in self._pairs}

    def __contains__(self, pair: object) -> bool:
        return pair in self._pairs

    def __iter__(self) -> Iterator[Pair]:
        return iter(set(self._pairs))

    def __len__(self) -> int:
        return len(self._pairs)


class Claims:
    """The pairs one run (a recovery, a pressure batch) holds in an ``InFlight`` set: it
    releases only what it claimed itself, each pair once, so it never drops a pair another
    component claimed after it let go."""

    def __init__(self, inflight: InFlight) -> None:
        self._inflight = inflight
        self._held: set[Pair] = set()

    def claim(self, pairs: Iterable[Pair]) -> set[Pair]:
        """Claim what nobody holds; returns the pairs this call claimed."""
        new = self._inflight.claim(pairs)
        self._held |= new
        return new

    def release(self, pairs: Iterable[Pair]) -> None:
        """Let go of those of ``pairs`` this run holds."""
        mine = self._held & set(pairs)
        self._held -= mine
        self._inflight.release(mine)

    def release_all(self) -> None:
        self.release(set(self._held))

    def __contains__(self, pair: object) -> bool:
        return pair in self._held
