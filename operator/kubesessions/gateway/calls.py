"""A call on a session, the one way every surface makes it (``/v1/run`` and the inference.sh routes).

``begin`` settles which session the call goes to (a new one, or an existing one that may take
calls: unknown, ended and app-mismatched ids fail here, before anything runs); ``stream`` and
``run`` then wait for its worker, make the call, explain an unreachable worker whose session has
just ended as that end (410), and close a one-shot session when the call is over. The surfaces
only translate shapes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubesessions.api.names import JSON
from kubesessions.gateway.auth import Identity
from kubesessions.gateway.forward import Forwarder, Reply
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.requests import NEW
from kubesessions.gateway.sessions import Sessions, live, view

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
        if wants_new(session):
            session_id = await self.sessions.create(namespace, app, spec, identity, call_id)
        else:
            session_id = str(session)
            self.sessions.check(await self.sessions.find(namespace, session_id), app)
        fresh, one_shot = wants_new(session), session is None
        return Call(namespace, session_id, app, fresh, one_shot, call_id, function or "run")

    @contextlib.asynccontextmanager
    async def stream(self, call: Call, input: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """The worker's event stream for the call, once the worker has queued it."""
        try:
            target = await self.sessions.target(call.namespace, call.session_id, call.app, ours=call.fresh)
            async with self.forwarder.call(call.key, target, input, call.call_id, call.function) as upstream:
                yield upstream
        except Problem as problem:
            if problem.code == "WORKER_UNAVAILABLE" and not call.fresh:
                problem = await self.sessions.explain_unavailable(call.namespace, call.session_id, problem)
            problem.members.setdefault("session_id", call.session_id)  # a new session stays usable
            raise problem from None
        finally:
            if call.one_shot:
                with contextlib.suppress(Problem):
                    await self.sessions.close(call.namespace, call.session_id, "one-shot call done")

    async def run(self, call: Call, input: Any) -> Reply:
        """The call's outputs, read whole."""
        async with self.stream(call, input) as upstream:
            return await self.forwarder.read(upstream, call.session_id)

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
        """Count as activity on the worker; the session with the deadline that follows."""
        target = await self.sessions.target(namespace, session_id, None)
        answer = await self.forwarder.keepalive(target)
        return live(await self.sessions.find(namespace, session_id), answer.get("lastActivity"))
