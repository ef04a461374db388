"""The transport registry: each way of moving bytes plugs in by name.

A transport module registers a factory under its name (``http`` here; ``rsync`` and
``torrent`` when they exist); the node builds the transports its config names from the
one ``TransportContext`` every factory gets. ``Transports`` is what the push path holds:
the built transports by name and the default one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.bandwidth import BandwidthCoordinator
from engine.transport.base import Transport


@dataclass(frozen=True)
class TransportContext:
    """What a transport may be built from."""

    node: str
    """The sending node's name."""
    session: aiohttp.ClientSession
    """The node's one peer session (the cluster token in its headers)."""
    bandwidth: BandwidthCoordinator
    chunk_bytes: int
    host_of: Callable[[str], Any] | None = None
    """A host's config by name (``HostConfig``), for transports that need more than its URL."""
    ssh: Any = None
    """The node's ``SshSetup`` (known_hosts and ssh options), for transports over SSH."""
    ssh_pool: Any = None
    """The node's ``SshPool``: pooled asyncssh connections for remote operations."""
    meter: Any = None
    """The node's ``MeterServer``: where a transport's child process draws bytes from the
    bandwidth buckets."""


Factory = Callable[[TransportContext], Transport]
_FACTORIES: dict[str, Factory] = {}


class UnknownTransport(ValueError):
    """A transport name nothing registered."""


def register(name: str, factory: Factory) -> None:
    """Make ``name`` buildable; a name registers once."""
    if name in _FACTORIES:
        raise ValueError(f"transport {name!r} is registered already")
    _FACTORIES[name] = factory


def available() -> list[str]:
    return sorted(_FACTORIES)


def build(name: str, context: TransportContext) -> Transport:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownTransport(f"no transport named {name!r} (available:"
                               f" {', '.join(available())})") from None
    return factory(context)


class Transports:
    """The transports one node built, by name; ``default`` carries pushes that name none."""

    def __init__(self, built: Iterable[Transport], default: str,
                 routes: Mapping[str, str] | None = None) -> None:
        self._by_name = {t.name: t for t in built}
        if default not in self._by_name:
            raise UnknownTransport(f"default transport {default!r} was not built")
        self.default = self._by_name[default]
        """The transport a push uses unless it names another."""
        self.routes = dict(routes or {})
        """Target node -> the transport pushes to it take (``hosts.<name>.transport``)."""
        for target, name in self.routes.items():
            if name not in self._by_name:
                raise UnknownTransport(f"transport {name!r} for {target} was not built")

    def for_target(self, target: str) -> Transport:
        """The transport that carries pushes to ``target``."""
        return self._by_name[self.routes.get(target, self.default.name)]

    def get(self, name: str | None = None) -> Transport:
        if name is None:
            return self.default
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownTransport(f"no transport {name!r} on this node (built:"
                                   f" {', '.join(sorted(self._by_name))})") from None

    def __iter__(self) -> Iterator[Transport]:
        return iter(self._by_name.values())
