from __future__ import annotations

import asyncio
import time

import pytest

from kubesessions.kube.workqueue import WorkQueue

pytestmark = pytest.mark.unit


async def test_one_worker_per_key_and_again_after() -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    seen: list[str] = []
    started, release, second, last = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(key: str) -> float | None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        seen.append(key)
        if key == "last":
            last.set()
        elif len(seen) == 1:
            started.set()
            await release.wait()
        else:
            second.set()
        running.discard(key)
        return None

    queue: WorkQueue[str] = WorkQueue(handle, workers=4)
    task = asyncio.create_task(queue.run())
    queue.add("a")
    async with asyncio.timeout(5):
        await started.wait()
    queue.add("a")  # while in work: once more afterwards, not concurrently, and only once
    queue.add("a")
    release.set()
    async with asyncio.timeout(5):
        await second.wait()
    # The second run has returned (nothing in it awaits after `second`), so a third, had the
    # two adds asked for one, is queued by now; a key added after it is handled after it.
    queue.add("last")
    async with asyncio.timeout(5):
        await last.wait()
    task.cancel()
    assert seen == ["a", "a", "last"]
    assert overlaps == []


async def test_requeue_after_and_earliest_wins() -> None:
    times: list[float] = []
    done = asyncio.Event()

    async def handle(key: str) -> float | None:
        times.append(time.monotonic())
        if len(times) == 2:
            done.set()
        return 0.2 if len(times) == 1 else None

    queue: WorkQueue[str] = WorkQueue(handle, workers=2)
    task = asyncio.create_task(queue.run())
    start = time.monotonic()
    queue.add("k")
    async with asyncio.timeout(5):
        await done.wait()
    task.cancel()
    assert 0.18 <= times[1] - start < 1.0
    queue.add("x", 10)
    queue.add("x", 1)
    assert queue.scheduled("x") == pytest.approx(1, abs=0.1)


async def test_failures_back_off_and_retry() -> None:
    calls = 0
    done = asyncio.Event()

    async def handle(key: str) -> float | None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("transient")
        done.set()
        return None

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    task = asyncio.create_task(queue.run())
    queue.add("k")
    async with asyncio.timeout(5):
        await done.wait()
    task.cancel()
    assert calls == 3
