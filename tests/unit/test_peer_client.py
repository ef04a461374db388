"""PeerClient against real aiohttp servers on free loopback ports: answers, the token it
sends, and every way a call fails mapped onto PeerError."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from engine.peer_client import PeerClient, PeerError, error_line
from tests.support.peer_server import TOKEN, app_of, free_port, peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


async def echo(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else None
    return web.json_response({"auth": request.headers.get("Authorization"),
                              "query": dict(request.query), "body": body,
                              "method": request.method})


async def full(_request: web.Request) -> web.Response:
    return web.json_response({"error": "disk full\nsecond line", "free": 0}, status=507)


async def text_error(_request: web.Request) -> web.Response:
    return web.Response(text="proxy says no\nmore detail", status=502)


async def not_json(_request: web.Request) -> web.Response:
    return web.Response(text="<html>hello</html>", status=200)


async def missing(_request: web.Request) -> web.Response:
    return web.json_response({"have": False}, status=404)


async def slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({})


async def events(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"data: one\n\n")
    return resp


ROUTES = {"GET /echo": echo, "POST /echo": echo, "GET /full": full, "GET /text": text_error,
          "GET /html": not_json, "GET /missing": missing, "GET /slow": slow,
          "GET /events": events}


async def test_a_get_returns_the_json_body_and_sends_the_bearer_token() -> None:
    async with peers({"gpu-1": ROUTES}) as client:
        body = await client.get("gpu-1", "/echo", timeout=2, params={"origin": "gpu-1"})
        assert client.url("gpu-1", "/echo").endswith("/echo")
        answer = await client.post("gpu-1", "/echo", {"n": 1}, timeout=2)
    assert body == {"auth": f"Bearer {TOKEN}", "query": {"origin": "gpu-1"}, "body": None,
                    "method": "GET"}
    assert (answer.status, answer.body["body"], answer.body["method"]) == (200, {"n": 1}, "POST")
    assert b'"n": 1' in answer.raw or b'"n":1' in answer.raw
    assert client.counts == {"calls": 2, "failed": 0}


async def test_a_peer_that_does_not_listen_is_unreachable() -> None:
    async with peers({}, down=["cpu-1"]) as client:
        with pytest.raises(PeerError) as err:
            await client.get("cpu-1", "/status", timeout=2)
    exc = err.value
    assert (exc.node, exc.status, exc.unreachable) == ("cpu-1", None, True)
    assert str(exc).startswith("cpu-1 unreachable: ")
    assert client.counts == {"calls": 1, "failed": 1}


async def test_a_peer_that_does_not_answer_in_time_is_unreachable() -> None:
    async with peers({"gpu-1": ROUTES}) as client:
        with pytest.raises(PeerError) as err:
            await client.get("gpu-1", "/slow", timeout=0.3)
    assert err.value.unreachable is True and err.value.status is None


async def test_an_unexpected_status_carries_the_peers_error_line() -> None:
    async with peers({"gpu-1": ROUTES}) as client:
        with pytest.raises(PeerError) as err:
            await client.get("gpu-1", "/full?x=1", timeout=2)
        with pytest.raises(PeerError) as text:
            await client.get("gpu-1", "/text", timeout=2)
    assert (err.value.node, err.value.status, err.value.unreachable) == ("gpu-1", 507, False)
    assert str(err.value) == "gpu-1 answered GET /full with 507: disk full"
    assert text.value.status == 502
    assert str(text.value) == "gpu-1 answered GET /text with 502: proxy says no"
    assert client.counts["failed"] == 2


async def test_an_expected_status_with_a_body_that_is_not_json_is_an_error() -> None:
    async with peers({"gpu-1": ROUTES}) as client:
        with pytest.raises(PeerError) as err:
            await client.get("gpu-1", "/html", timeout=2)
        raw = await client.call("gpu-1", "GET", "/html", timeout=2, parse=False)
    assert (err.value.status, err.value.unreachable) == (200, False)
    assert "no JSON" in str(err.value)
    assert (raw.status, raw.body, raw.raw) == (200, None, b"<html>hello</html>")


async def test_other_statuses_can_be_expected() -> None:
    async with peers({"gpu-1": ROUTES}) as client:
        answer = await client.call("gpu-1", "GET", "/missing", timeout=2, expect=(200, 404))
        with pytest.raises(PeerError) as err:
            await client.call("gpu-1", "GET", "/missing", timeout=2)
    assert (answer.status, answer.body) == (404, {"have": False})
    assert err.value.status == 404


async def test_a_wrong_token_is_refused_by_the_peer() -> None:
    runner = web.AppRunner(app_of(ROUTES), shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = PeerClient("coord", "wrong", lambda _n: f"http://127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match="before open"):
        client.session
    await client.open()
    try:
        with pytest.raises(PeerError) as err:
            await client.get("gpu-1", "/echo", timeout=2)
    finally:
        await client.close()
        await runner.cleanup()
    assert err.value.status == 401 and str(err.value).endswith(": no token")


async def test_a_stream_yields_the_response_or_raises() -> None:
    async with peers({"gpu-1": ROUTES}, down=["cpu-1"]) as client:
        async with client.stream("gpu-1", "/events") as resp:
            assert resp.status == 200
            assert await resp.content.readline() == b"data: one\n"
        with pytest.raises(PeerError) as err:
            async with client.stream("gpu-1", "/nothing"):
                pass
        assert err.value.status == 404 and not err.value.unreachable
        with pytest.raises(PeerError) as down:
            async with client.stream("cpu-1", "/events"):
                pass
        assert down.value.unreachable and down.value.node == "cpu-1"


def test_error_line() -> None:
    assert error_line(b'{"error": "bad token\\nmore"}') == "bad token"
    assert error_line('{"detail": "x"}') == '{"detail": "x"}'
    assert error_line(b"\n  first\nsecond") == "first"
    assert error_line(b"") == ""
    assert error_line("y" * 500, limit=10) == "y" * 10
    assert error_line(b"\xff\xfe oops") == "\ufffd\ufffd oops"
