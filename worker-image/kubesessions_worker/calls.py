"""Calls and the session's memory of them: each call records its events, so a retry with the
same call id (``Idempotency-Key``) reads them again or follows the call still under way,
and no call id runs twice.

The memory is bounded by a count and a byte budget (the encoded outputs and problems of the
finished calls kept). A finished call pushed out keeps only its id, in a longer list, so a
retry of it is refused (``CALL_ALREADY_RAN``) rather than run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kubesessions.api.names import CALL_ID_HEADER

from .problems import Problem

# Ids alone are small: remember this many times more of them than of results.
IDS_PER_RESULT = 16
KEY_LIMIT = 200
DONE_SIZE = 64


@dataclass(frozen=True)
class Output:
    json: str  # one output value, already encoded: a value that is not JSON fails its call


@dataclass(frozen=True)
class Done:
    session_closed: bool
    duration_ms: float


@dataclass(frozen=True)
class Failed:
    problem: Problem


Event = Output | Done | Failed


@dataclass(eq=False)
class Call:
    """A call accepted into the queue; its events end with exactly one Done or Failed."""

    input: Any
    number: int  # 1 for the session's first call: names it in logs and endings
    key: str | None = None
    fingerprint: str = ""  # of the function and input, when a key is given: a key names one of each
    function: str = "run"  # which of the app's functions (see AppHost.functions)
    events: list[Event] = field(default_factory=list)
    streamed: bool = False  # run() yielded rather than returned
    started: bool = False  # the app has it (it left the queue)
    cancelled: bool = False  # someone cancelled it: a queued call never runs; a running one ends as it will
    _grew: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, event: Event) -> None:
        self.events.append(event)
        self._grew.set()

    @property
    def finished(self) -> bool:
        return bool(self.events) and not isinstance(self.events[-1], Output)

    def view(self) -> dict[str, Any]:
        """What a reader of the call by its id is told (``GET /calls/{id}``): its state, the
        outputs so far, and how it ended."""
        last = self.events[-1] if self.finished else None
        return {
            "id": self.key,
            "state": "finished" if last is not None else "running" if self.started else "queued",
            "cancelled": self.cancelled,
            "streamed": self.streamed,
            "outputs": [json.loads(e.json) for e in self.events if isinstance(e, Output)],
            "error": last.problem.body() if isinstance(last, Failed) else None,
        }

    async def settled(self, seconds: float) -> None:
        """Return when the call has finished, or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for _ in self.follow():
                    pass

    def size(self) -> int:
        """Bytes its record holds, about: the encoded outputs and problem; a Done is small."""
        return sum(_size(event) for event in self.events)

    async def follow(self) -> AsyncIterator[list[Event]]:
        """The events from the first, in batches of what has arrived, until the last one.
        Any number of readers may follow one call (a retry attaches this way)."""
        seen = 0
        while True:
            if seen < len(self.events):
                batch, seen = self.events[seen:], len(self.events)
                yield batch
                if not isinstance(batch[-1], Output):
                    return
                continue
            self._grew.clear()
            await self._grew.wait()


def _size(event: Event) -> int:
    if isinstance(event, Output):
        return len(event.json)
    if isinstance(event, Failed):
        return len(json.dumps(event.problem.body()))
    return DONE_SIZE


def check_key(key: str | None) -> str | None:
    if key is not None and not (0 < len(key) <= KEY_LIMIT and key.isascii() and key.isprintable()):
        raise Problem(
            "VALIDATION", f"the {CALL_ID_HEADER} header must be 1..{KEY_LIMIT} printable ASCII characters"
        )
    return key


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Recent:
    """The session's calls by id: unfinished ones always, finished ones within the bounds."""

    def __init__(self, count: int, budget: int) -> None:
        self.count, self.budget = count, budget
        self._calls: OrderedDict[str, Call] = OrderedDict()
        self._bytes = 0
        self._ran: OrderedDict[str, None] = OrderedDict()  # ids whose results were dropped

    def find(self, key: str, payload_fingerprint: str) -> Call | None:
        """The call already made under ``key``; None if there is none, so it may run."""
        call = self._calls.get(key)
        if call is not None:
            # A call cancelled before it arrived matches whatever input it then comes with.
            if call.fingerprint != payload_fingerprint and not (call.cancelled and not call.started):
                raise Problem(
                    "IDEMPOTENCY_KEY_REUSED",
                    f"the {CALL_ID_HEADER} {key!r} was already used for a call with another input",
                )
            return call
        if key in self._ran:
            raise Problem(
                "CALL_ALREADY_RAN",
                f"the call with {CALL_ID_HEADER} {key!r} already ran; its result is no longer kept "
                f"(the worker keeps the last {self.count} results, up to {self.budget} bytes)",
            )
        return None

    def get(self, key: str) -> Call:
        """The call made under ``key``, whatever its input (a reader asks by id alone)."""
        call = self._calls.get(key)
        if call is not None:
            return call
        if key in self._ran:
            raise Problem(
                "CALL_ALREADY_RAN",
                f"the call with {CALL_ID_HEADER} {key!r} ran; its result is no longer kept",
            )
        raise Problem("CALL_NOT_FOUND", f"no call with {CALL_ID_HEADER} {key!r} in this session")

    def add(self, call: Call) -> None:
        assert call.key is not None
        self._calls[call.key] = call

    def settle(self, call: Call) -> None:
        """A kept call finished: count its bytes, then drop the oldest finished over the bounds."""
        if call.key is None:
            return
        self._bytes += call.size()
        finished = [k for k, c in self._calls.items() if c.finished]
        while finished and (len(finished) > self.count or self._bytes > self.budget):
            key = finished.pop(0)
            self._bytes -= self._calls.pop(key).size()
            self._ran[key] = None
            if len(self._ran) > self.count * IDS_PER_RESULT:
                self._ran.popitem(last=False)
