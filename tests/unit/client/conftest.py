"""The fake gateway, served on its own thread and loop for every client test that asks for it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from .fakegateway import FakeGateway, free_port


@pytest.fixture
def fake() -> Iterator[tuple[FakeGateway, str]]:
    """The fake gateway on its own thread and loop, so the blocking client can call it."""
    gateway, port, started = FakeGateway(), free_port(), threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(gateway.app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())
    thread = threading.Thread(target=lambda: (started.set(), loop.run_forever()), daemon=True)
    thread.start()
    started.wait()
    yield gateway, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
