"""The gateway's client of its workers (gateway/upstream.py) against aiohttp's server, the one
the workers run: whole and streamed bodies, connections kept and reused, and every way an
answer can fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubesessions.gateway.upstream import HIGH_WATER, Upstream, WorkerConnectionError

pytestmark = pytest.mark.unit

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[tuple[str, int]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> tuple[str, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        assert server.port is not None
        return "127.0.0.1", server.port

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    pool = Upstream(connect_timeout=2)
    yield pool
    pool.close()


async def test_an_answer_is_read_whole_and_its_connection_reused(serve: Serve, upstream: Upstream) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "body": body.decode(),
                "auth": request.headers["Authorization"],
            },
            headers={"Retry-After": "3"},
        )

    host, port = await serve(handler)
    for n in range(2):
        async with await upstream.request(
            "POST", host, port, f"/run?n={n}", {"Authorization": "Bearer t"}, b"hi"
        ) as r:
            assert (r.status, r.headers["retry-after"]) == (200, "3")
            assert await r.json() == {
                "method": "POST",
                "path": f"/run?n={n}",
                "body": "hi",
                "auth": "Bearer t",
            }
        assert upstream.idle() == 1
    assert peers[0] == peers[1]  # the second request came on the first one's connection


async def test_a_streamed_body_comes_as_it_is_written(serve: Serve, upstream: Upstream) -> None:
    more = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: output\ndata: 1\n\n")
        await more.wait()  # the first part must reach the reader before the second is written
        await response.write_eof(b"event: done\ndata: {}\n\n")
        return response

    host, port = await serve(handler)
    response = await upstream.request("POST", host, port, "/run", {})
    parts = response.iter_any()
    assert await anext(parts) == b"event: output\ndata: 1\n\n"
    more.set()
    assert [part async for part in parts] == [b"event: done\ndata: {}\n\n"]
    response.release()
    assert upstream.idle() == 1


async def test_a_large_body_is_read_whole_through_the_paused_socket(serve: Serve, upstream: Upstream) -> None:
    blob = bytes(range(256)) * (4 * HIGH_WATER // 256)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(blob), 65536):
            await response.write(blob[start : start + 65536])
        await response.write_eof()
        return response

    host, port = await serve(handler)
    async with await upstream.request("GET", host, port, "/", {}) as response:
        assert await response.read() == blob


async def test_a_worker_that_closes_mid_answer_is_an_error_and_its_connection_is_dropped(
    serve: Serve, upstream: Upstream
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"part")
        assert request.transport is not None
        request.transport.close()
        return response

    host, port = await serve(handler)
    response = await upstream.request("POST", host, port, "/run", {})
    with pytest.raises(WorkerConnectionError, match="before its answer ended"):
        await response.read()
    response.release()
    assert upstream.idle() == 0


async def test_an_answer_left_unread_closes_its_connection(serve: Serve, upstream: Upstream) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.Event().wait()  # never ends (the test server cancels it at close)
        return response

    host, port = await serve(handler)
    async with await upstream.request("POST", host, port, "/run", {}):
        pass
    assert upstream.idle() == 0  # its rest could arrive as the next request's answer


async def test_no_answer_within_the_read_timeout_is_a_timeout_and_the_connection_is_dropped(
    serve: Serve, upstream: Upstream
) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        return web.Response()

    host, port = await serve(handler)
    with pytest.raises(TimeoutError):
        await upstream.request("POST", host, port, "/run", {}, read_timeout=0.2)
    assert upstream.idle() == 0


async def test_a_refused_connection_is_a_worker_connection_error(upstream: Upstream) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on the port now
    with pytest.raises(WorkerConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
        await upstream.request("POST", "127.0.0.1", port, "/run", {})


async def test_an_answer_that_is_not_http_is_a_worker_connection_error(upstream: Upstream) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(WorkerConnectionError, match="not valid HTTP"):
            await upstream.request("GET", "127.0.0.1", port, "/status", {}, read_timeout=5)


async def test_idle_connections_are_closed_after_the_keepalive() -> None:
    closed = asyncio.Event()

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()  # until the client closes its end
        closed.set()

    server = await asyncio.start_server(once, "127.0.0.1", 0)
    pool = Upstream(connect_timeout=2, keepalive=0.1)
    async with server:
        async with await pool.request(
            "GET", "127.0.0.1", server.sockets[0].getsockname()[1], "/", {}
        ) as response:
            assert await response.read() == b"ok"
        assert pool.idle() == 1
        async with asyncio.timeout(10):
            await closed.wait()
        assert pool.idle() == 0
        pool.close()


def test_the_client_works_on_uvloop_the_gateways_loop() -> None:
    async def exchange() -> bytes:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
            await writer.drain()

        server = await asyncio.start_server(once, "127.0.0.1", 0)
        pool = Upstream(connect_timeout=2)
        async with server:
            port = server.sockets[0].getsockname()[1]
            async with await pool.request("POST", "127.0.0.1", port, "/run", {}, b"{}") as response:
                body = await response.read()
            pool.close()
        return body

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(exchange()) == b"ok"
