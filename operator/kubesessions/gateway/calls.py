"""A call on a session, the one way every surface makes it (``/v1/run`` and the inference.sh routes).

``begin`` settles which session the call goes to (a new one, or an existing one that may take
calls: unknown, ended and app-mismatched ids fail here, before anything runs); ``stream`` and
``run`` then wait for its worker, make the call, explain an unreachable worker whose session has
just ended as that end (410), and close a one-shot session when the call is over, recording its
outcome on the Session (:mod:`.oneshot`), which a retry of it then gets. The surfaces only
translate shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kubesessions.api.names import JSON, SUSPENDING
from kubesessions.gateway import oneshot
from kubesessions.gateway.auth import Identity
from kubesessions.gateway.forward import Events, Forwarder, Reply, Target
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.requests import NEW
from kubesessions.gateway.sessions import Sessions, asleep, live, view

log = logging.getLogger("kubesessions.gateway")


@dataclass(frozen=True)
class Call:
    namespace: str
    session_id: str
    app: str | None
    fresh: bool  # the session was started for this call
    one_shot: bool  # the session is closed when this call is over
    call_id: str | None = None  # Idempotency-Key: a retry of it never runs twice on the worker
    function: str = "run"  # which of the app's functions (the worker names those it has)
    recorded: JSON | None = None  # a one-shot call that already ran: its outcome, kept on its Session

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.session_id


def wants_new(session: str | None) -> bool:
    """Whether a call's ``session`` asks for a new session (``"new"``, or absent for a one-shot call)."""
    return session in (None, NEW)


class Calls:
    def __init__(self, sessions: Sessions, forwarder: Forwarder) -> None:
        self.sessions, self.forwarder = sessions, forwarder

    async def begin(
        self,
        namespace: str,
        identity: Identity,
        app: str | None,
        session: str | None,
        spec: Any,
        call_id: str | None = None,
        function: str | None = None,
    ) -> Call:
        """The session this call goes to: started now from ``spec``, or an existing one checked."""
        recorded = None
        if wants_new(session):
            session_id = await self.sessions.create(namespace, app, spec, identity, call_id, session is None)
            if session is None:
                recorded = oneshot.recorded(await self.sessions.find(namespace, session_id), call_id)
        else:
            session_id = str(session)
            self.sessions.check(await self.sessions.find(namespace, session_id), app)
        fresh, one_shot = wants_new(session), session is None
        return Call(namespace, session_id, app, fresh, one_shot, call_id, function or "run", recorded)

    @contextlib.asynccontextmanager
    async def stream(self, call: Call, input: Any) -> AsyncIterator[Events]:
        """The call's events: the worker's, once it has queued the call; or, for a one-shot call
        that already ran, those its Session recorded."""
        # Only a one-shot call's outcome is recorded, and matched by it: the others skip the hash.
        print_ = oneshot.fingerprint(call.function, input) if call.one_shot else ""
        if call.recorded is not None:
            yield Events.again(oneshot.events(call.recorded, print_))
            return
        target: Target | None = None
        failure: Problem | None = None
        try:
            target = await self.sessions.target(call.namespace, call.session_id, call.app, ours=call.fresh)
            opened = False
            try:
                async with self.forwarder.call(
                    call.key, target, input, call.call_id, call.function
                ) as upstream:
                    opened = True
                    yield Events.live(upstream)
            except Problem as problem:
                if opened or not self._went_to_sleep(call, problem):
                    raise
                # The worker began to suspend just before the call came, or is gone suspended
                # (the call did not run): wake the session and make the call on the resumed worker.
                await self.sessions.wake(call.namespace, call.session_id)
                target = await self.sessions.target(call.namespace, call.session_id, call.app)
                async with self.forwarder.call(
                    call.key, target, input, call.call_id, call.function
                ) as upstream:
                    yield Events.live(upstream)
        except Problem as problem:
            if problem.code == "WORKER_UNAVAILABLE" and not call.fresh:
                problem = await self.sessions.explain_unavailable(call.namespace, call.session_id, problem)
            problem.members.setdefault("session_id", call.session_id)  # a new session stays usable
            failure = problem
            raise problem from None
        except asyncio.CancelledError:  # the gateway stops (or the task was cancelled)
            failure = Problem("CANCELLED", "the call was cancelled in the gateway before it ended")
            raise
        finally:
            if call.one_shot:
                await self._close_one_shot(call, target, print_, failure)

    def _went_to_sleep(self, call: Call, problem: Problem) -> bool:
        if problem.code == SUSPENDING:
            return True
        body = self.sessions.cache.sessions.get(call.key)
        return problem.code == "WORKER_UNAVAILABLE" and body is not None and asleep(body)

    async def _close_one_shot(
        self, call: Call, target: Target | None, print_: str, failure: Problem | None
    ) -> None:
        """Close a one-shot call's session with the call's outcome: the worker's view of it when
        the worker has it whole, else, for a call that never reached the worker (it never runs
        now), the problem it ended with. A call whose fate the worker cannot tell (its streaming
        client left before the end, its worker was lost mid-call) has none: its retry is told
        the session ended."""
        outcome = None
        if target is not None and call.call_id is not None:
            try:
                view = await self.forwarder.call_state(target, call.call_id)
            except Problem as problem:
                log.info(
                    "session %s: the one-shot call's outcome is not recorded: %s",
                    call.session_id,
                    problem,
                    extra={"session": call.session_id},
                )
            else:
                if view.get("state") == "finished":
                    outcome = oneshot.record(view, print_, self.sessions.settings.one_shot_outcome_bytes)
        if outcome is None and failure is not None and target is None and call.call_id is not None:
            outcome = oneshot.record(
                oneshot.failed(call.call_id, failure.body()),
                print_,
                self.sessions.settings.one_shot_outcome_bytes,
            )
        with contextlib.suppress(Problem):
            await self.sessions.close(call.namespace, call.session_id, "one-shot call done", outcome)

    async def run(self, call: Call, input: Any) -> Reply:
        """The call's outputs, read whole."""
        async with self.stream(call, input) as events:
            return await events.reply(call.session_id)

    async def describe(self, namespace: str, session_id: str) -> JSON:
        """The session with its worker's live activity (one call to its ``/status``) when it has
        a Ready worker; else, or if the worker does not answer, as the Session records it."""
        body = await self.sessions.find(namespace, session_id)
        target = self.sessions.ready(namespace, session_id)
        if target is None:
            return view(body)
        try:
            worker = await self.forwarder.status(target)
        except Problem as problem:
            log.info("session %s: no live figures: %s", session_id, problem, extra={"session": session_id})
            return view(body)
        return live(body, worker.get("lastActivity"), worker.get("calls"))

    async def keepalive(self, namespace: str, session_id: str) -> JSON:
        """Count as activity on the worker; the session with the deadline that follows. A
        suspended session's keep time starts again instead (it is not woken)."""
        kept = await self.sessions.keep_asleep(namespace, session_id)
        if kept is not None:
            return kept
        target = await self.sessions.target(namespace, session_id, None)
        answer = await self.forwarder.keepalive(target)
        return live(await self.sessions.find(namespace, session_id), answer.get("lastActivity"))
