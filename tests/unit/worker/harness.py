"""Helpers for the worker's tests: an in-process worker behind aiohttp's test server."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient, TestServer

from kubesessions_worker import http
from kubesessions_worker.app import AppHost
from kubesessions_worker.claim import Slot
from kubesessions_worker.gpu import GpuMonitor
from kubesessions_worker.runner import Clock, Runner
from kubesessions_worker.termination import Reason

from . import apps

T = TypeVar("T")
TOKEN = "s3cret-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def spec(name: str) -> str:
    """A fixture app by class name, or any app by its full ``module:Class``."""
    return name if ":" in name else f"{apps.__name__}:{name}"


class FakeClock(Clock):
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.epoch = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime.datetime:
        return self.epoch + datetime.timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def until(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll ``check`` on the event loop until truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.005)
    return result


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], what: str, timeout: float = 10
) -> T:
    """Like :func:`until` for something that must be fetched (over HTTP, say)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await probe()
        if check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last seen: {seen}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def runner_for(
    app: str,
    *,
    queue_size: int = 16,
    call_timeout: float = 0,
    call_grace: float = 30,
    call_retention: float = 600,
    call_retention_bytes: int = 1 << 20,
    clock: Clock | None = None,
    config: dict[str, Any] | None = None,
    setup: bool = True,
    pooled: bool = False,
) -> AsyncIterator[Runner]:
    runner = Runner(
        AppHost(spec(app)),
        session_id="s-test",
        session_timeout=60,
        queue_size=queue_size,
        call_timeout=call_timeout,
        call_grace=call_grace,
        call_retention=call_retention,
        call_retention_bytes=call_retention_bytes,
        clock=clock,
        pooled=pooled,
    )
    if setup:
        await runner.setup(config or {})
    try:
        yield runner
    finally:
        runner.stop(Reason.TERMINATED)
        await runner.shutdown(grace=5)


@dataclass
class Worker:
    client: TestClient[Any, Any]
    runner: Runner
    gpu: GpuMonitor

    @property
    def app(self) -> Any:
        return self.runner.app.instance

    async def call(self, input: Any, **body: Any) -> tuple[int, Any]:
        async with self.client.post("/run", json={"input": input, **body}, headers=AUTH) as resp:
            return resp.status, await resp.json(content_type=None)

    async def events(self, input: Any) -> list[tuple[str, str]]:
        """A streaming call's SSE events as (event, data) pairs, in order."""
        async with self.client.post("/run", json={"input": input, "stream": True}, headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            text = await resp.text()
        return [_event(block) for block in text.split("\n\n") if block]


def _event(block: str) -> tuple[str, str]:
    fields = dict(line.split(": ", 1) for line in block.splitlines())
    return fields["event"], fields["data"]


@asynccontextmanager
async def worker(
    app: str, *, max_body_bytes: int = 1 << 20, slot: Slot | None = None, **runner: Any
) -> AsyncIterator[Worker]:
    async with runner_for(app, pooled=slot is not None and slot.pooled, **runner) as r:
        gpu = GpuMonitor(interval=60)
        server = TestServer(
            http.build(r, gpu, token=TOKEN, max_body_bytes=max_body_bytes, slot=slot), host="127.0.0.1"
        )
        async with TestClient(server) as client:
            yield Worker(client, r, gpu)
