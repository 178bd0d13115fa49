"""One call at a time, in arrival order: a bounded FIFO queue in front of the app.

The runner owns the worker's state machine (STARTING → READY ⇄ BUSY, SETUP_FAILED, CLOSING;
READY → SUSPENDING → CLOSING or back to READY),
the activity stamps the idle culler relies on, per-call timeouts, and how the session ends.
It speaks in :class:`Call` events, not HTTP.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubesessions.api.names import BUSY, RESUME_REFUSED, SUSPENDING

from .app import AppHost, Value
from .calls import Call, Done, Failed, Output, Recent, fingerprint
from .problems import Problem
from .session import CallScope, current_call
from .stats import CallStats, Held, HeldTime
from .termination import Ending, Reason

log = logging.getLogger(__name__)


class State(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    SETUP_FAILED = "SETUP_FAILED"
    SUSPENDING = "SUSPENDING"  # the app's state is being saved: no call may start
    CLOSING = "CLOSING"


@dataclass(frozen=True)
class Status:
    state: State
    session_id: str
    last_activity: datetime.datetime
    idle_seconds: float
    in_flight: int
    queued: int
    calls: int
    uptime_seconds: float
    session_timeout: int
    held: Held  # the uptime split: starting, busy, idle


class Clock:
    """Monotonic time for durations, wall time for what is reported; swapped in tests."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)


class Runner:
    def __init__(
        self,
        app: AppHost,
        *,
        session_id: str,
        session_timeout: int,
        queue_size: int,
        call_timeout: float,
        call_grace: float = 30.0,
        call_retention: float = 600.0,
        call_retention_bytes: int = 16 << 20,
        clock: Clock | None = None,
        pooled: bool = False,
    ) -> None:
        """``pooled``: a warm pool worker, its session's clocks waiting for :meth:`claimed`."""
        self.app = app
        self.session_id = session_id
        self.session_timeout = session_timeout
        self.queue_size = queue_size
        self.call_timeout = call_timeout or None  # 0 means no limit
        self.call_grace = call_grace
        self.clock = clock or Clock()
        self.recent = Recent(call_retention, call_retention_bytes, self.clock.monotonic)
        self.state = State.STARTING
        self._started = self.clock.monotonic()
        self.stats = CallStats(HeldTime(started=self._started, pooled=pooled))
        self._waiting: deque[Call] = deque()
        self._wake = asyncio.Event()
        self._running: Call | None = None
        self._calls = 0
        self._submitted = 0
        self._wedged = False  # a call's sync code never came back: the app thread is lost
        self._mean_seconds = 0.0  # moving average of call durations, for Retry-After
        self._ending: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._serving: asyncio.Task[None] | None = None
        self._set_up = False
        self._resumed = False  # a worker takes one resume, before any call
        self._resuming = False  # calls queue, and wait, while the app's state comes back
        self._stamp()

    # -- activity ---------------------------------------------------------------------------

    def _stamp(self) -> None:
        self._activity_mono = self.clock.monotonic()
        self._activity_wall = self.clock.now()

    def idle_seconds(self) -> float:
        """Zero while a call runs or waits, or the state is saved or restored: work in hand is
        activity, however long it takes."""
        if self._running is not None or self._waiting or self._resuming or self.state is State.SUSPENDING:
            return 0.0
        return max(0.0, self.clock.monotonic() - self._activity_mono)

    def status(self) -> Status:
        return Status(
            state=self.state,
            session_id=self.session_id,
            last_activity=self._activity_wall,
            idle_seconds=self.idle_seconds(),
            in_flight=int(self._running is not None),
            queued=len(self._waiting),
            calls=self._calls,
            uptime_seconds=self.clock.monotonic() - self._started,
            session_timeout=self.session_timeout,
            held=self.stats.held.split(self.clock.monotonic()),
        )

    def keepalive(self) -> bool:
        """Count a keepalive as activity; False once the session is ending (a suspending one is
        not ending yet: the suspend may fail and the session go on)."""
        if self.state not in (State.READY, State.BUSY, State.SUSPENDING):
            return False
        self._stamp()
        return True

    def claimed(self, session_id: str, session_timeout: int) -> bool:
        """A pool worker becomes ``session_id``'s: its idle clock and its GPU-seconds start now
        (the time before is its App's pool time). False if it is not ready to be claimed."""
        if not self.keepalive():
            return False
        self.session_id, self.session_timeout = session_id, session_timeout
        self.stats.held.claimed(self.clock.monotonic())
        return True

    def close_if_idle(self, seconds: float) -> float | None:
        """End the session as IdleTimeout only if it has been idle for ``seconds``.

        The check and the stop are one step on the event loop, so a call arriving meanwhile
        either sees the session closing or keeps it alive: the culler can never end a
        session mid-call. Returns None when it closed, else the seconds still to wait.
        """
        idle = self.idle_seconds()
        if self.state not in (State.READY, State.BUSY) or self._running is not None or self._waiting:
            return seconds
        if idle < seconds:
            return seconds - idle
        self.stop(Reason.IDLE_TIMEOUT, f"idle for {idle:.1f}s (timeout {seconds:g}s)")
        return None

    # -- suspend and resume (the HTTP side: suspension.py) ---------------------------------------

    def begin_suspend(self) -> None:
        """Take the worker from READY to SUSPENDING, or raise why not. Like :meth:`close_if_idle`,
        one step on the event loop: a call that arrived first wins (BUSY), and a call that
        arrives after is refused (SUSPENDING), so the state saved is the state after every call."""
        if self.state is State.CLOSING:
            raise Problem("SESSION_ENDED", "the session is closing or closed")
        if self.state in (State.STARTING, State.SETUP_FAILED):
            raise Problem("NOT_READY", f"the worker is {self.state}: there is no app state to save")
        if self.state is State.SUSPENDING:
            raise Problem(SUSPENDING, "a suspend is already under way")
        if self._running is not None or self._waiting or self._resuming:
            raise Problem(BUSY, "a call is running or queued; suspend when the session is idle")
        self.state = State.SUSPENDING

    def end_suspend(self, saved: str | None) -> None:
        """``saved`` (the result, as JSON): the state is stored, the worker ends (exit 0, its
        GPU free when the pod is gone). None: it failed, the session goes on as before."""
        if self.state is not State.SUSPENDING:  # stopped meanwhile (SIGTERM): that ending stands
            return
        if saved is not None:
            self.stop(Reason.SUSPENDED, saved)
        else:
            self.state = State.READY
            self._wake.set()

    def begin_resume(self) -> None:
        """Hold calls back while the app's state comes back; only on a worker that has taken no
        call and no resume yet (state restored over a used app would mix two sessions)."""
        if self.state is State.CLOSING:
            raise Problem("SESSION_ENDED", "the session is closing or closed")
        if self.state in (State.STARTING, State.SETUP_FAILED):
            raise Problem("NOT_READY", f"the worker is {self.state}: the app is not set up")
        if self._resumed or self._submitted or self.state is not State.READY:
            raise Problem(RESUME_REFUSED, "this worker has already taken calls or a resume")
        self._resumed = self._resuming = True

    def end_resume(self, failure: str | None) -> None:
        """Let the queued calls run; on ``failure`` end the session instead (the app may hold
        half its state: no call may see it)."""
        self._resuming = False
        self._stamp()
        if failure is not None:
            self.stop(Reason.RESUME_FAILED, failure)
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    async def setup(self, config: Mapping[str, Any]) -> None:
        """Load the app and run its setup; READY after, SETUP_FAILED (and re-raise) if it fails."""
        started = self.clock.monotonic()
        try:
            await self.app.setup(config)
        except Exception:
            self.state = State.SETUP_FAILED
            raise
        self._set_up = True
        if self.state is State.STARTING:  # a stop during setup wins
            self.state = State.READY
            self._stamp()  # idleness counts from readiness, not from process start
            self.stats.held.ready(self.clock.monotonic())
            self._serving = asyncio.create_task(self._serve(), name="runner")
        log.info("setup done in %.2fs", self.clock.monotonic() - started)

    def stop(self, reason: Reason, message: str = "") -> None:
        """Stop taking calls now; the running one may finish (see :meth:`shutdown`).

        The first reason wins: a SIGTERM after POST /close does not rename the ending.
        """
        if self._ending.done():
            return
        log.info("session ending: %s%s", reason, f" ({message})" if message else "")
        self.state = State.CLOSING
        while self._waiting:
            self._reject_waiting(self._waiting.popleft())
        self._ending.set_result(Ending(reason, message))
        self._wake.set()

    async def ending(self) -> Ending:
        return await asyncio.shield(self._ending)

    async def shutdown(self, grace: float) -> None:
        """Let the running call finish, then close the app; both within ``grace`` seconds."""
        deadline = self.clock.monotonic() + grace
        if self._serving is not None:
            done, _ = await asyncio.wait([self._serving], timeout=grace)
            if not done:
                log.warning("the running call outlived the %.0fs stop grace; cancelling it", grace)
                self._serving.cancel()
                await asyncio.wait([self._serving])
        if not self._set_up:
            return
        if self._wedged:  # close() would queue behind the stuck call on the app thread
            log.warning("the app's close() is skipped: its thread is still stuck in a call")
            return
        left = max(0.0, deadline - self.clock.monotonic())
        try:
            async with asyncio.timeout(left):
                await self.app.thread.settled()
                await self.app.close()
        except TimeoutError:
            log.warning("the app's close() did not finish within the stop grace")
        except Exception:
            log.exception("the app's close() failed")

    # -- calls --------------------------------------------------------------------------------

    def submit(self, payload: Any, key: str | None = None, function: str = "run") -> Call:
        """Queue a call, or raise the :class:`Problem` that says why it cannot be taken.

        A call id (``key``) already seen gives back that call, finished or not, whatever the
        state: a retry gets the outcome of the call it repeats, and no call id runs twice.
        """
        print_ = ""
        if key is not None:
            print_ = fingerprint([function, payload])  # a key names one function and input
            if (known := self.recent.find(key, print_)) is not None:
                return known
        if self.state is State.CLOSING:
            raise self._rejected(Problem("SESSION_ENDED", "the session is closing or closed"))
        if self.state is State.SUSPENDING:
            raise self._rejected(Problem(SUSPENDING, "the session is being suspended; call again to wake it"))
        if self.state in (State.STARTING, State.SETUP_FAILED):
            what = "still running setup" if self.state is State.STARTING else "failed its setup"
            raise self._rejected(Problem("NOT_READY", f"the app {what}"))
        # Room for the running call plus queue_size waiting ones; a call just taken but not yet
        # started still sits in _waiting, so count both together.
        if len(self._waiting) + (self._running is not None) > self.queue_size:
            raise self._rejected(
                Problem(
                    "QUEUE_FULL",
                    f"{len(self._waiting)} calls are already waiting (queue size {self.queue_size})",
                    retry_after=self._retry_after(),
                )
            )
        self._submitted += 1
        call = Call(payload, self._submitted, key, print_, function)
        if key is not None:
            self.recent.add(call)
        self._waiting.append(call)
        self._wake.set()
        return call

    def refuse(self, payload: Any, key: str, function: Any, problem: Problem) -> Problem:
        """A keyed call refused before it could queue (it names a function the app lacks): kept
        under its id with that outcome, so a retry and any other reader of the id (another
        gateway replica following the task) get the refusal, not "not found"."""
        print_ = fingerprint([function, payload])
        if self.recent.find(key, print_) is None:
            call = Call(payload, 0, key, print_, str(function))
            call.put(Failed(problem))
            self.recent.add(call)
            self.recent.settle(call)
        return self._rejected(problem)

    def cancel(self, key: str) -> Call:
        """Cancel the call made under ``key``: a queued one never runs (it fails CANCELLED); a
        running one runs to its end (stopping app code midway could break the session's state);
        a finished one stays as it ended. Either way it is marked cancelled for its readers."""
        try:
            call = self.recent.get(key)
        except Problem as problem:
            if problem.code != "CALL_NOT_FOUND":
                raise
            # Cancelled before it arrived (another gateway replica is still handing it over):
            # kept under its id, so when it comes it gets this outcome and never runs.
            call = Call(None, 0, key)
            self.recent.add(call)
        call.cancelled = True
        if not call.started and not call.finished:
            if call in self._waiting:
                self._waiting.remove(call)
            call.put(Failed(Problem("CANCELLED", f"the call {key!r} was cancelled before it ran")))
            self.recent.settle(call)
        return call

    def _rejected(self, problem: Problem) -> Problem:
        self.stats.rejected[problem.code] += 1
        return problem

    def _reject_waiting(self, call: Call) -> None:
        self.stats.outcomes["session_ended"] += 1
        call.put(Failed(Problem("SESSION_ENDED", "the session closed before the call could run")))
        self.recent.settle(call)

    def _retry_after(self) -> int:
        """Whole seconds until a slot is likely free: the queue ahead times the mean call."""
        return max(1, math.ceil(self._mean_seconds * (len(self._waiting) + 1)))

    async def _serve(self) -> None:
        while self.state is not State.CLOSING:
            if not self._waiting or self._resuming:
                self._wake.clear()
                await self._wake.wait()
                continue
            call = self._running = self._waiting.popleft()
            call.started = True
            self.state = State.BUSY
            self._stamp()
            self.stats.held.call_started(self.clock.monotonic())
            try:
                await self._execute(call)
            finally:
                self.stats.held.call_ended(self.clock.monotonic())
                self._running = None
                self._stamp()
                if self.state is State.BUSY:
                    self.state = State.READY

    async def _execute(self, call: Call) -> None:
        scope = CallScope()
        token = current_call.set(scope)
        started = self.clock.monotonic()
        limit = asyncio.timeout(self.call_timeout)
        try:
            async with limit:
                await self._drive(call)
        except asyncio.CancelledError:
            self._finish(
                call, started, "session_ended", Problem("SESSION_ENDED", "the session closed during the call")
            )
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and limit.expired():  # ours, not the app's own
                log.warning("call %d ran past its %gs timeout", call.number, self.call_timeout)
                problem = Problem("CALL_TIMEOUT", f"the call ran past {self.call_timeout:g}s")
                self._finish(call, started, "call_timeout", problem)
                await self._await_app_thread(call)
            else:
                log.warning("run failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
                self._finish(call, started, "run_failed", _run_failed(exc))
        else:
            if scope.end_requested:
                self.stop(Reason.CLOSED_BY_APP, "the app called end_session()")
            self._finish(call, started, "ok", None)
        finally:
            current_call.reset(token)

    async def _await_app_thread(self, call: Call) -> None:
        """Sync code cannot be interrupted: the next call waits until the thread is free, so app
        code never overlaps. A thread still busy after the call grace is taken as lost, and the
        session ends rather than hold its GPU for code that may never return."""
        try:
            async with asyncio.timeout(self.call_grace):
                await self.app.thread.settled()
        except TimeoutError:
            self._wedged = True
            self.stop(
                Reason.CALL_TIMEOUT,
                f"call {call.number} ran past its {self.call_timeout:g}s timeout and the app's code "
                f"had still not returned {self.call_grace:g}s later",
            )

    async def _drive(self, call: Call) -> None:
        reply = await self.app.run(call.input, call.function)
        if isinstance(reply, Value):
            call.put(Output(_encode(reply.value)))
            return
        call.streamed = True
        async with aclosing(reply.items) as items:
            async for item in items:
                call.put(Output(_encode(item)))

    def _finish(self, call: Call, started: float, outcome: str, problem: Problem | None) -> None:
        seconds = self.clock.monotonic() - started
        self._calls += 1
        self.stats.outcomes[outcome] += 1
        self.stats.latency.observe(seconds)
        self._mean_seconds += (seconds - self._mean_seconds) * (1.0 if self._calls == 1 else 0.2)
        if problem is None:
            call.put(Done(self.state is State.CLOSING, round(seconds * 1000, 3)))
        else:
            call.put(Failed(problem))
        self.recent.settle(call)


# One encoder for every output: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _encode(value: Any) -> str:
    return _ENCODER.encode(value)


def _run_failed(exc: BaseException) -> Problem:
    return Problem("RUN_FAILED", str(exc) or type(exc).__name__, errorType=type(exc).__name__)
