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
