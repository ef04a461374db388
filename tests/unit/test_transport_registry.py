"""engine.transport.registry: transports plug in by name; a node's ``Transports``."""

from __future__ import annotations

import aiohttp
import pytest

from engine.bandwidth import BandwidthCoordinator
from engine.transport import HttpTransport, registry
from engine.transport.registry import TransportContext, Transports, UnknownTransport
from tests.unit.test_push_path_parts import FakeTransport

pytestmark = pytest.mark.unit


class Named(FakeTransport):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


@pytest.fixture
def factories(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The registry's factories for this test only (what it registers goes away after)."""
    table = dict(registry._FACTORIES)
    monkeypatch.setattr(registry, "_FACTORIES", table)
    return table


async def test_http_is_registered_and_builds_from_the_context() -> None:
    assert "http" in registry.available()
    bandwidth = BandwidthCoordinator(lambda _host: 50.0)
    async with aiohttp.ClientSession() as session:
        built = registry.build("http", TransportContext("gpu-1", session, bandwidth, 4096))
    assert isinstance(built, HttpTransport) and built.name == "http"
    assert (built.session, built.node, built.bandwidth, built.chunk_bytes) == (
        session, "gpu-1", bandwidth, 4096)


def test_a_factory_registers_once_and_gets_the_context(factories: dict) -> None:
    seen: list[TransportContext] = []

    def factory(ctx: TransportContext) -> Named:
        seen.append(ctx)
        return Named("torrent")

    assert registry.available() == ["http", "rsync"]
    registry.register("torrent", factory)
    assert registry.available() == ["http", "rsync", "torrent"]
    with pytest.raises(ValueError, match="registered already"):
        registry.register("torrent", factory)
    context = TransportContext("gpu-1", None, None, 1)  # type: ignore[arg-type]
    assert registry.build("torrent", context).name == "torrent"
    assert seen == [context]
    with pytest.raises(UnknownTransport, match=r"no transport named 'relay' \(available:"
                                               r" http, rsync, torrent\)"):
        registry.build("relay", context)


def test_transports_by_name_and_the_default() -> None:
    http, rsync = Named("http"), Named("rsync")
    transports = Transports([http, rsync], "rsync")
    assert transports.default is rsync
    assert transports.get() is rsync and transports.get(None) is rsync
    assert transports.get("http") is http
    assert list(transports) == [http, rsync]
    routed = Transports([http, rsync], "http", {"coord": "rsync"})
    assert routed.for_target("coord") is rsync and routed.for_target("gpu-2") is http
    with pytest.raises(UnknownTransport, match="transport 'torrent' for coord was not built"):
        Transports([http], "http", {"coord": "torrent"})
    with pytest.raises(UnknownTransport, match=r"no transport 'torrent' on this node \(built:"
                                               r" http, rsync\)"):
        transports.get("torrent")
    with pytest.raises(UnknownTransport, match="default transport 'torrent' was not built"):
        Transports([http], "torrent")
    assert isinstance(UnknownTransport("x"), ValueError)
