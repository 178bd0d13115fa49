"""A session that comes back: when it has expired or ended, start a new one and replay the call.

The reference's recovery pattern, packaged. Replaying is only right when the app's state can
be rebuilt from ``init`` (the new worker starts empty), so it happens only when asked for.

What to do when lives once, in :class:`Recovery`, as plans: generators that yield the client
calls to make, as functions of the client, and are sent their answers (or thrown their errors).
:class:`RecoveringSession` carries a plan out with a :class:`Client`,
:class:`AsyncRecoveringSession` awaits it with an :class:`AsyncClient`: both clients have the
same methods, the async ones just return awaitables.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from kubesessions.client.aio import AsyncClient
from kubesessions.client.errors import SessionNotFound
from kubesessions.client.sync import Client

T = TypeVar("T")
C = TypeVar("C", Client, AsyncClient)
Step = Callable[[Any], Any]  # one client call: given the client, its answer (or an awaitable of it)
Plan = Generator[Step, Any, T]


class Recovery(Generic[C]):
    """The state and decisions shared by the blocking and the asyncio manager (no I/O here)."""

    def __init__(
        self, client: C, app: str, session_timeout: int | None = None, init: Any = None, recover: bool = True
    ) -> None:
        self.client: C = client
        self.app, self.session_timeout, self.init, self.recover = app, session_timeout, init, recover
        self.session_id: str | None = None
        self.recoveries = 0

    def _ensure(self) -> Plan[str]:
        if self.session_id is None:
            if self.init is None:
                started = yield lambda client: client.create_session(self.app, self.session_timeout)
            else:
                params = self._params(self.init, "new")
                started = yield lambda client: client.run(params)
            self.session_id = str(started["session_id"])
        return self.session_id

    def _run(self, input: Any) -> Plan[dict[str, Any]]:
        try:
            return (yield from self._call(input))
        except SessionNotFound:
            if not self.recover:
                raise
            self.session_id = None
            self.recoveries += 1
        return (yield from self._call(input))

    def _call(self, input: Any) -> Plan[dict[str, Any]]:
        params = self._params(input, (yield from self._ensure()))
        result: dict[str, Any] = yield lambda client: client.run(params)
        return result

    def _close(self) -> Plan[None]:
        if self.session_id is not None:
            session_id = self.session_id
            yield lambda client: client.close_session(session_id)
            self.session_id = None

    def _params(self, input: Any, session: str) -> dict[str, Any]:
        return {"app": self.app, "input": input, "session": session, "session_timeout": self.session_timeout}


def _advance(plan: Plan[T], answer: Any = None, error: Exception | None = None) -> Step | _Done[T]:
    """The plan's next call, given the last one's answer or error; or its result once it ends."""
    try:
        return plan.throw(error) if error is not None else plan.send(answer)
    except StopIteration as end:
        return _Done(end.value)


class _Done(Generic[T]):
    def __init__(self, value: T) -> None:
        self.value = value


class RecoveringSession(Recovery[Client]):
    """``run(input)`` on one session; on "session not found" (expired, ended), recover if ``recover``."""

    def ensure_session(self) -> str:
        return self._carry_out(self._ensure())

    def run(self, input: Any) -> dict[str, Any]:
        return self._carry_out(self._run(input))

    def close(self) -> None:
        self._carry_out(self._close())

    def __enter__(self) -> RecoveringSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _carry_out(self, plan: Plan[T]) -> T:
        step = _advance(plan)
        while not isinstance(step, _Done):
            try:
                answer = step(self.client)
            except Exception as exc:  # handed to the plan, which decides (and re-raises what it cannot use)
                step = _advance(plan, error=exc)
            else:
                step = _advance(plan, answer)
        return step.value


class AsyncRecoveringSession(Recovery[AsyncClient]):
    """:class:`RecoveringSession` for asyncio: ``await run(input)``; ``async with`` closes it."""

    async def ensure_session(self) -> str:
        return await self._carry_out(self._ensure())

    async def run(self, input: Any) -> dict[str, Any]:
        return await self._carry_out(self._run(input))

    async def close(self) -> None:
        await self._carry_out(self._close())

    async def __aenter__(self) -> AsyncRecoveringSession:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _carry_out(self, plan: Plan[T]) -> T:
        step = _advance(plan)
        while not isinstance(step, _Done):
            try:
                answer = await step(self.client)
            except Exception as exc:  # handed to the plan, which decides (and re-raises what it cannot use)
                step = _advance(plan, error=exc)
            else:
                step = _advance(plan, answer)
        return step.value
