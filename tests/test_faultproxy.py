"""The fault proxy itself, in front of a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.faultproxy import Fault, FaultProxy

BODY = bytes(range(256)) * 40  # 10,240 bytes, varied enough that a prefix check means something


@dataclass(frozen=True)
class Seen:
    """What the server got of one request: the length it was promised, and the body bytes."""

    content_length: int | None
    body: bytes


SEEN = web.AppKey("seen", asyncio.Queue[Seen])


async def record(request: web.Request) -> web.Response:
    """Read the body as far as it goes, and note what arrived even if the client hung up."""
    received = bytearray()
    try:
        async for chunk in request.content.iter_any():
            received += chunk
    finally:
        request.app[SEEN].put_nowait(Seen(request.content_length, bytes(received)))
    return web.Response(text="ok")


@pytest.fixture
async def server(aiohttp_server: AiohttpServer) -> TestServer:
    """A real aiohttp server on loopback that records every POST it gets."""
    app = web.Application()
    app[SEEN] = asyncio.Queue()
    app.router.add_post("/", record)
    return await aiohttp_server(app)


@pytest.fixture
def proxy(server: TestServer) -> Iterator[FaultProxy]:
    """The fault proxy in front of `server`, passing everything unless told otherwise."""
    assert server.port is not None
    with FaultProxy(server.port) as running:
        yield running


async def post(proxy: FaultProxy) -> int:
    """POST BODY through the proxy on a new connection; the status."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{proxy.port}/", data=BODY) as resp,
    ):
        await resp.read()
        return resp.status


async def seen(server: TestServer) -> Seen:
    """The next request the server saw."""
    async with asyncio.timeout(5):
        return await server.app[SEEN].get()


async def test_pass_forwards_the_whole_body(server: TestServer, proxy: FaultProxy) -> None:
    assert await post(proxy) == 200
    got = await seen(server)
    assert got == Seen(len(BODY), BODY)


async def test_reset_cuts_the_request_inside_its_body(
    server: TestServer, proxy: FaultProxy
) -> None:
    """The collector gets the head and a prefix of the body; the client never gets an answer."""
    cuts = []
    for _ in range(5):
        proxy.inject(Fault.RESET, 1)
        with pytest.raises(aiohttp.ClientError):
            await post(proxy)
        got = await seen(server)
        assert got.content_length == len(BODY)
        assert len(got.body) < len(BODY), "the whole body reached the server"
        assert got.body == BODY[: len(got.body)]
        cuts.append(len(got.body))
    assert len(set(cuts)) > 1, f"the cut is always at {cuts[0]}: not a random part"
    assert proxy.counts[Fault.RESET] == 5
    # the proxy and the server are fine afterwards
    assert await post(proxy) == 200
    assert (await seen(server)).body == BODY
