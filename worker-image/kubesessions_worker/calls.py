"""Calls and the session's memory of them: each call records its events, so a retry with the
same call id (``Idempotency-Key``) reads them again or follows the call still under way,
and no call id runs twice.

The memory is a retry window bounded by time and bytes: a finished call's id is remembered for
``retention`` seconds after it finished, its outcome with it while the kept outcomes fit in
``budget`` bytes (the encoded outputs and problems; the oldest go first). Within the window a
retry gets the outcome, or, when the budget pushed it out early, ``CALL_ALREADY_RAN`` (never a
second run). After the window the id is forgotten: the same id then names a new call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from kubesessions.api.names import CALL_ID_HEADER

from .problems import Problem

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
    """The session's calls by id: unfinished ones always; finished ones for the retry window."""

    def __init__(self, retention: float, budget: int, clock: Callable[[], float]) -> None:
        self.retention, self.budget, self.clock = retention, budget, clock
        self._calls: dict[str, Call] = {}  # unfinished, and finished ones whose outcome is kept
        self._bytes = 0  # of the kept outcomes
        self._kept: OrderedDict[str, None] = OrderedDict()  # finished with their outcome, oldest first
        self._ended: OrderedDict[str, float] = OrderedDict()  # every finished id: when it finished

    def find(self, key: str, payload_fingerprint: str) -> Call | None:
        """The call already made under ``key``; None if there is none, so it may run."""
        self._expire()
        call = self._calls.get(key)
        if call is not None:
            # A call cancelled before it arrived matches whatever input it then comes with.
            if call.fingerprint != payload_fingerprint and not (call.cancelled and not call.started):
                raise Problem(
                    "IDEMPOTENCY_KEY_REUSED",
                    f"the {CALL_ID_HEADER} {key!r} was already used for a call with another input",
                )
            return call
        if key in self._ended:
            raise self._already_ran(key)
        return None

    def get(self, key: str) -> Call:
        """The call made under ``key``, whatever its input (a reader asks by id alone)."""
        self._expire()
        call = self._calls.get(key)
        if call is not None:
            return call
        if key in self._ended:
            raise self._already_ran(key)
        raise Problem("CALL_NOT_FOUND", f"no call with {CALL_ID_HEADER} {key!r} in this session")

    def add(self, call: Call) -> None:
        assert call.key is not None
        self._calls[call.key] = call

    def settle(self, call: Call) -> None:
        """A kept call finished: its window starts; the oldest outcomes over the budget go."""
        if call.key is None:
            return
        self._ended[call.key] = self.clock()
        self._kept[call.key] = None
        self._bytes += call.size()
        self._expire()
        while self._bytes > self.budget and self._kept:
            self._drop(next(iter(self._kept)))

    def _expire(self) -> None:
        """Forget the ids (and outcomes) whose window has passed."""
        horizon = self.clock() - self.retention
        while self._ended:
            key, ended = next(iter(self._ended.items()))
            if ended >= horizon:
                return
            del self._ended[key]
            if key in self._kept:
                self._drop(key)

    def _drop(self, key: str) -> None:
        del self._kept[key]
        self._bytes -= self._calls.pop(key).size()

    def _already_ran(self, key: str) -> Problem:
        return Problem(
            "CALL_ALREADY_RAN",
            f"the call with {CALL_ID_HEADER} {key!r} already ran; its outcome is no longer kept "
            f"(outcomes are kept {self.retention:g}s after the call, within {self.budget} bytes in all: "
            "later, larger outcomes pushed this one out)",
        )
