"""A call whose fate is unknown is never sent again: both clients against real sockets that
read the request and then stall or drop the connection, counting how often the call arrived."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubesessions.client import AsyncClient, Client, GatewayUnavailable, OutcomeUnknown

from .fakegateway import FAST

pytestmark = pytest.mark.unit
RUN = {"app": "counter", "input": {"add": 1}, "session": "s-1"}
REPLY = b'{"session_id": "s-1", "output": 1, "session_closed": false, "duration_ms": 1}'


class Gateway:
    """A raw HTTP/1.1 listener on its own thread. ``plan`` says, per request on a connection
    (0 for the first), what to do once it has been read: "answer", "stall" or "drop"."""

    def __init__(self, plan: Callable[[int], str]) -> None:
        self.plan = plan
        self.arrived: list[str] = []  # request lines, in order
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
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                reader.read(length)
                self.arrived.append(line.decode().strip())
                action = self.plan(number)
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


@CLIENTS
def test_a_read_timeout_is_not_sent_to_the_next_gateway(gateways: Any, run: Any) -> None:
    first, second = gateways(lambda n: "stall"), gateways(lambda n: "stall")
    with pytest.raises(OutcomeUnknown, match="may have run") as err:
        run([first.url, second.url], calls=1)
    assert (len(first.arrived), len(second.arrived)) == (1, 0), "the call arrived once, at one gateway"
    assert isinstance(err.value, GatewayUnavailable), "still a GatewayUnavailable for old handlers"
    assert "not sent again" in str(err.value)


@CLIENTS
def test_a_reused_connection_dropped_after_the_request_is_not_resent(gateways: Any, run: Any) -> None:
    # The first call is answered on a kept-alive connection; the second is read, then dropped.
    first = gateways(lambda n: "answer" if n == 0 else "drop")
    second = gateways(lambda n: "answer")
    with pytest.raises(OutcomeUnknown):
        run([first.url, second.url], calls=2)
    assert (len(first.arrived), len(second.arrived)) == (2, 0)


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
