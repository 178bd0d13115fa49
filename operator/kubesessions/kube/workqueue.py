"""A work queue of keys, the controller-runtime way: each key handled by one worker at a
time, added again while in work means 'once more after', and a handler says when to look
again (``requeue after``) instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("kubesessions.kube.workqueue")

MAX_BACKOFF = 60.0


class WorkQueue(Generic[K]):
    def __init__(self, handler: Callable[[K], Awaitable[float | None]], workers: int = 8) -> None:
        self._handler = handler
        self._workers = workers
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._busy: set[K] = set()
        self._again: set[K] = set()
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._timer_wake = asyncio.Event()
        self._failures: dict[K, int] = {}
        self.handled: Counter[str] = Counter()  # finished handler runs: ok / error

    @property
    def depth(self) -> int:
        """Keys waiting for a worker (not those scheduled for later)."""
        return self._ready.qsize()

    def add(self, key: K, after: float = 0.0) -> None:
        """Handle ``key`` now, or in ``after`` seconds (the earliest request wins)."""
        if after <= 0:
            self._due.pop(key, None)
            if key in self._busy:
                self._again.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.put_nowait(key)
            return
        when = time.monotonic() + after
        if key in self._due and self._due[key] <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        self._timer_wake.set()

    def forget(self, key: K) -> None:
        """Drop scheduled looks at ``key`` (its object is gone)."""
        self._due.pop(key, None)
        self._failures.pop(key, None)

    def scheduled(self, key: K) -> float | None:
        """Seconds until ``key``'s next scheduled look, if any."""
        when = self._due.get(key)
        return None if when is None else max(0.0, when - time.monotonic())

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._timer())]
        tasks += [asyncio.create_task(self._worker()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _timer(self) -> None:
        while True:
            self._timer_wake.clear()
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                when, _, key = heapq.heappop(self._heap)
                if self._due.get(key) == when:
                    self.add(key)
            delay = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), delay)

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._busy.add(key)
            try:
                after = await self._handler(key)
                self._failures.pop(key, None)
                self.handled["ok"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.handled["error"] += 1
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                after = min(MAX_BACKOFF, 0.2 * 2**failures)
                log.exception("handling %s failed (attempt %d); again in %.1fs", key, failures, after)
            finally:
                self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
            elif after is not None:
                self.add(key, after)
