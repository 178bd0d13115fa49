"""A call whose fate is unknown is sent again with the same call id, through any gateway: both
clients against real sockets that read the request and then stall or drop the connection (or
cut a stream short), counting how often the call arrived and under which Idempotency-Key."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubesessions.client import AsyncClient, Client, GatewayUnavailable

from .fakegateway import FAST

pytestmark = pytest.mark.unit
RUN = {"app": "counter", "input": {"add": 1}, "session": "s-1"}
REPLY = b'{"session_id": "s-1", "output": 1, "session_closed": false, "duration_ms": 1}'
SESSION, A, B = (
    b'event: session\ndata: {"session_id": "s-1"}\n\n',
    b'event: output\ndata: "a"\n\n',
    b'event: output\ndata: "b"\n\n',
)
DONE = b'event: done\ndata: {"session_closed": false, "duration_ms": 1}\n\n'
# A stream's answer: headers, then the events until the connection closes.
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


class Gateway:
    """A raw HTTP/1.1 listener on its own thread. ``plan`` says, per request on a connection
    (0 for the first), what to do once it has been read: "answer", "stall", "drop",
    "answer-then-close", "stream" (a whole stream) or "cut" (a stream cut after its first output)."""

    def __init__(self, plan: Callable[[int], str]) -> None:
        self.plan = plan
        self.arrived: list[str] = []  # request lines, in order
        self.keys: list[str | None] = []  # their Idempotency-Key headers
        self.closed = 0  # connections this side has closed
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._exchange(conn)
        finally:
            conn.close()
            self.closed += 1

    def _exchange(self, conn: socket.socket) -> None:
        with conn.makefile("rb") as reader:
            for number in range(100):
                line = reader.readline()
                if not line:
                    return
                length, key = 0, None
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    if name.lower() == "idempotency-key":
                        key = value.strip()
                reader.read(length)
                self.arrived.append(line.decode().strip())
                self.keys.append(key)
                action = self.plan(number)
                if action in ("stream", "cut"):
                    conn.sendall(STREAM_HEAD + SESSION + A + (B + DONE if action == "stream" else b""))
                    return
                if action == "stall":
                    self.stop.wait(30)
                    return
                if action == "drop":
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(REPLY)}\r\n\r\n".encode()
                    + REPLY
                )
                if action == "answer-then-close":
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def gateways() -> Iterator[Callable[[Callable[[int], str]], Gateway]]:
    made: list[Gateway] = []

    def make(plan: Callable[[int], str]) -> Gateway:
        made.append(Gateway(plan))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


def run_sync(urls: list[str], calls: int, between: Callable[[int], bool] = lambda n: True) -> Any:
    """``calls`` calls in turn; before call n + 1, wait until ``between(n)``."""
    with Client(urls, token="t", request_timeout=0.5, retry=FAST) as client:
        for n in range(1, calls):
            client.run(RUN)
            deadline = time.monotonic() + 5
            while not between(n):
                assert time.monotonic() < deadline, "timed out waiting between calls"
                time.sleep(0.005)
        return client.run(RUN)


def run_async(urls: list[str], calls: int, between: Callable[[int], bool] = lambda n: True) -> Any:
    async def go() -> Any:
        async with AsyncClient(urls, token="t", request_timeout=0.5, retry=FAST) as client:
            for n in range(1, calls):
                await client.run(RUN)
                deadline = time.monotonic() + 5
                while not between(n):  # the loop turns meanwhile let aiohttp read the close
                    assert time.monotonic() < deadline, "timed out waiting between calls"
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.005)  # one more turn: the close was sent, now it is read
            return await client.run(RUN)

    return asyncio.run(go())


CLIENTS = pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])


def one_key(*gateways: Gateway) -> str | None:
    """The call id every arrival carried; fails if they differ or one came without."""
    keys = {key for gateway in gateways for key in gateway.keys}
    assert len(keys) == 1 and None not in keys, f"one call id on every try, got {keys}"
    return keys.pop()


@CLIENTS
def test_a_read_timeout_is_sent_again_to_the_next_gateway_with_the_same_key(gateways: Any, run: Any) -> None:
    first, second = gateways(lambda n: "stall"), gateways(lambda n: "answer")
    assert run([first.url, second.url], calls=1)["output"] == 1
    assert (len(first.arrived), len(second.arrived)) == (1, 1), "tried at the first, answered by the second"
    one_key(first, second)


@CLIENTS
def test_a_reused_connection_dropped_after_the_request_is_sent_again(gateways: Any, run: Any) -> None:
    # The first call is answered on a kept-alive connection; the second is read, then dropped:
    # the gateway that dropped it goes to the back, so the other one answers the retry.
    first = gateways(lambda n: "answer" if n == 0 else "drop")
    second = gateways(lambda n: "answer")
    assert run([first.url, second.url], calls=2)["output"] == 1
    assert (len(first.arrived), len(second.arrived)) == (2, 1)
    assert first.keys[1] == second.keys[0] != first.keys[0], "the retry kept its own call's id"


@CLIENTS
def test_a_call_no_gateway_answers_is_tried_a_bounded_number_of_times(gateways: Any, run: Any) -> None:
    first, second = gateways(lambda n: "drop"), gateways(lambda n: "stall")
    with pytest.raises(GatewayUnavailable, match="no gateway answered"):
        run([first.url, second.url], calls=1)
    assert len(first.arrived) + len(second.arrived) == FAST.attempts * 2, "every URL, every attempt"
    one_key(first, second)


def stream_sync(urls: list[str]) -> list[Any]:
    with Client(urls, token="t", request_timeout=0.5, retry=FAST) as client:
        return list(client.stream(RUN))


def stream_async(urls: list[str]) -> list[Any]:
    async def go() -> list[Any]:
        async with AsyncClient(urls, token="t", request_timeout=0.5, retry=FAST) as client:
            return [output async for output in client.stream(RUN)]

    return asyncio.run(go())


STREAMS = pytest.mark.parametrize("stream", [stream_sync, stream_async], ids=["sync", "async"])


@STREAMS
def test_a_stream_cut_short_is_resumed_without_repeating_an_output(gateways: Any, stream: Any) -> None:
    # The worker answers a repeated call id with the call's events from the first: the client
    # skips the output it already handed out.
    first, second = gateways(lambda n: "cut"), gateways(lambda n: "stream")
    assert stream([first.url, second.url]) == ["a", "b"]
    assert (len(first.arrived), len(second.arrived)) == (1, 1)
    one_key(first, second)


@STREAMS
def test_a_stream_cut_on_every_try_fails_after_the_retries(gateways: Any, stream: Any) -> None:
    gateway = gateways(lambda n: "cut")
    with pytest.raises(GatewayUnavailable, match="broke off before the call finished"):
        stream([gateway.url])
    assert len(gateway.arrived) == FAST.attempts
    one_key(gateway)


@CLIENTS
def test_a_connection_the_gateway_closed_while_idle_is_replaced(gateways: Any, run: Any) -> None:
    # The gateway closes each connection after answering (as it does a kept-alive one left
    # idle): the next call must notice before sending, open a new one, and arrive once.
    gateway = gateways(lambda n: "answer-then-close")
    assert run([gateway.url], calls=3, between=lambda n: gateway.closed >= n)["output"] == 1
    assert len(gateway.arrived) == 3


@CLIENTS
def test_a_refused_connection_goes_to_the_next_gateway(gateways: Any, run: Any) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}"
    gateway = gateways(lambda n: "answer")
    assert run([dead, gateway.url], calls=1)["output"] == 1
    assert len(gateway.arrived) == 1
