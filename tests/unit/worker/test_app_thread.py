"""The app thread's hand-off: outcomes come back to the loop; a caller that gives up stops a queued
job from running but never a running one, which :meth:`AppThread.settled` then waits for."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kubesessions_worker.app import AppThread

pytestmark = pytest.mark.unit


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("from the app thread")


async def test_results_and_exceptions_come_back_on_the_loop() -> None:
    thread = AppThread()
    assert await thread.run(lambda a, b: (a, b, threading.current_thread().name), 1, 2) == (1, 2, "app")
    with pytest.raises(Boom, match="from the app thread"):
        await thread.run(fail)


async def test_a_cancelled_queued_job_never_runs_and_a_running_one_runs_to_its_end() -> None:
    thread = AppThread()
    release, started = threading.Event(), threading.Event()
    ran: list[str] = []

    def first() -> None:
        started.set()
        release.wait(10)
        ran.append("first")

    running = asyncio.create_task(thread.run(first))
    queued = asyncio.create_task(thread.run(ran.append, "second"))
    await asyncio.to_thread(started.wait, 10)
    for task in (running, queued):
        task.cancel()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    settled = asyncio.create_task(thread.settled())
    await asyncio.sleep(0)
    assert not settled.done()  # the running job has not come back yet
    release.set()
    async with asyncio.timeout(10):
        await settled
        await thread.run(ran.append, "third")
    assert ran == ["first", "third"]
