"""The gateway's HTTP/1.1 client of its workers: kept-alive connections per worker address,
httptools' parser, bodies as bytes.

Why not aiohttp's client, which this replaced: a minimal proxy forwarding to echo workers spent
0.311-0.393 ms of CPU per call at 10 clients with it and 0.185-0.245 ms with this (two runs;
`bench/proxy_floor.py`, docs/performance.md). The gateway asks one thing of a
client: send a request to a pod address it knows, read the status and a few headers, and read
the body whole or as it arrives. Workers speak plain HTTP/1.1 (aiohttp's server), with
`Content-Length` or chunked bodies. What it does not do, as the gateway never needs it: TLS,
redirects, cookies, proxies, compression, a body read until the connection closes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import httptools

# A reader that falls behind stops the socket being read past this many buffered bytes.
HIGH_WATER = 256 << 10


class WorkerConnectionError(ConnectionError):
    """Refused, reset, closed before the answer ended, or an answer that is not HTTP."""


class _Connection(asyncio.Protocol):
    """One TCP connection to a worker, carrying one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.chunks: deque[bytes] = deque()
        self.error: WorkerConnectionError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._expect()

    def _expect(self) -> None:
        """Ready for the next answer."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks.clear()
        self.buffered = 0
        self.headed = False  # the status line and headers are in
        self.complete = False  # the whole answer is in
        self.keep_alive = False  # the worker keeps the connection open after this answer

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(WorkerConnectionError(f"the worker's answer is not valid HTTP: {exc}"))

    def eof_received(self) -> bool:
        return False  # the transport closes itself: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            why = f": {exc}" if exc else ""
            self._fail(
                WorkerConnectionError(f"the worker closed the connection before its answer ended{why}")
            )

    # -- httptools' callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # Asked here: the parser answers it only while the message is still its current one.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- one exchange --------------------------------------------------------------------------

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self._expect()
        self.transport.write(request)

    async def wait(self, timeout: float | None) -> None:
        """Until something more has arrived (or the answer failed); TimeoutError after
        ``timeout`` seconds without a byte."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A timer on the future, not asyncio.timeout: half its cost, twice a call.
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        """What has arrived of the body since the last take."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self.keep_alive

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    def _fail(self, error: WorkerConnectionError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """A worker's answer: status and headers now, the body whole (:meth:`read`) or as it comes
    (:meth:`iter_any`). Leave it with :meth:`release` (or ``async with``): a connection whose
    answer was read whole goes back to the pool, any other is closed."""

    def __init__(
        self, connection: _Connection, pool: Upstream, address: tuple[str, int], read_timeout: float | None
    ):
        self._connection, self._pool, self._address = connection, pool, address
        self._read_timeout = read_timeout
        self._released = False
        self.status = connection.status
        self.headers = connection.headers  # names in lower case

    async def iter_any(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                return
            else:
                await connection.wait(self._read_timeout)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_any()])

    async def json(self) -> Any:
        return json.loads(await self.read())

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._connection.reusable():
            self._pool.put_back(self._address, self._connection)
        else:
            self._connection.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Upstream:
    """Connections to workers, kept alive ``keepalive`` seconds idle (the workers' server keeps
    them 75 s, so it never closes one the pool is about to reuse), no limit on their number."""

    def __init__(self, connect_timeout: float, keepalive: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._idle: dict[tuple[str, int], list[tuple[_Connection, float]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        read_timeout: float | None = None,
    ) -> Response:
        """Send one request and wait for the status and headers (``read_timeout`` seconds at
        most); raises :class:`WorkerConnectionError` or TimeoutError."""
        address = (host, port)
        connection = await self._connection(address)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        connection.send(
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        try:
            while not connection.headed:
                await connection.wait(read_timeout)
        except BaseException:
            connection.close()
            raise
        return Response(connection, self, address, read_timeout)

    def _fresh(self, connection: _Connection, since: float, now: float) -> bool:
        return not connection.closed and now - since < self.keepalive

    async def _connection(self, address: tuple[str, int]) -> _Connection:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            connection, since = idle.pop()
            if self._fresh(connection, since, now):
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(_Connection, *address)
        except OSError as exc:
            raise WorkerConnectionError(f"cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return connection

    def put_back(self, address: tuple[str, int], connection: _Connection) -> None:
        self._idle.setdefault(address, []).append((connection, time.monotonic()))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past ``keepalive`` (a deleted worker's would stay open)."""
        self._sweeper = None
        now = time.monotonic()
        for address, idle in list(self._idle.items()):
            keep = []
            for connection, since in idle:
                if self._fresh(connection, since, now):
                    keep.append((connection, since))
                else:
                    connection.close()
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)

    def idle(self) -> int:
        return sum(map(len, self._idle.values()))

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection, _ in idle:
                connection.close()
        self._idle.clear()
