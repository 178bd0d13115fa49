"""The asyncio client (aiohttp): the same API as :class:`~kubesessions.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from kubesessions.client import _core
from kubesessions.client._core import Base, Call, StreamState


class AsyncClient(Base):
    """Sessions over the gateway, for asyncio code: ``async with AsyncClient(...) as client``.

    Inside ``async with``, connections are kept and reused across calls and closed at the end
    of the block; outside it, each call opens its own and closes them when it is done, so a
    client that is never closed leaves nothing open either.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: aiohttp.ClientSession | None = None

    def _new_http(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=_core.CONNECT_TIMEOUT, sock_read=self.request_timeout
        )
        return aiohttp.ClientSession(timeout=timeout)

    @contextlib.asynccontextmanager
    async def _connections(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self._http is not None:
            yield self._http
        else:
            async with self._new_http() as http:
                yield http

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """One call: ``{"session_id", "output", ...}``; raises a :class:`KubeSessionsError` subclass."""
        result: dict[str, Any] = await self._json(_core.run_call(params, stream=False))
        return result

    def stream(self, params: Mapping[str, Any]) -> AsyncStream:
        """The outputs of one call as the app yields them: ``async for output in client.stream(...)``."""
        return AsyncStream(self, _core.run_call(params, stream=True))

    async def create_session(
        self, app: str, session_timeout: int | None = None, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(_core.create_call(app, session_timeout, config))
        return result

    async def get_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(_core.get_call(session_id))
        return result

    async def list_sessions(self, app: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._json(_core.list_call(app)))["sessions"]
        return result

    async def close_session(self, session_id: str) -> None:
        await self._json(_core.close_call(session_id))

    async def keepalive(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(_core.keepalive_call(session_id))
        return result

    async def suspend(self, session_id: str) -> dict[str, Any]:
        """Ask for the session to be suspended once no call runs (its App must have suspend
        enabled): its app saves its state and its worker stops. The session as it stands now."""
        result: dict[str, Any] = await self._json(_core.suspend_call(session_id))
        return result

    async def resume(self, session_id: str) -> dict[str, Any]:
        """Ask for a suspended session to be resumed (a call resumes it too, and waits for it)."""
        result: dict[str, Any] = await self._json(_core.resume_call(session_id))
        return result

    @contextlib.asynccontextmanager
    async def session(
        self, app: str, session_timeout: int | None = None, config: dict[str, Any] | None = None
    ) -> AsyncIterator[AsyncSession]:
        """A session (idle timeout ``session_timeout`` seconds) that is closed when the block ends,
        however it ends."""
        info = await self.create_session(app, session_timeout, config)
        session = AsyncSession(self, app, info["session_id"])
        try:
            yield session
        finally:
            await session.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> AsyncClient:
        if self._http is None:
            self._http = self._new_http()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- transport ---------------------------------------------------------------------------

    async def _json(self, call: Call) -> Any:
        async with self._connections() as http:
            _, response = await self._send(http, call)
            async with response:
                return _core.answer(
                    response.status, await response.read(), response.headers.get("Retry-After")
                )

    async def _send(self, http: aiohttp.ClientSession, call: Call) -> tuple[str, aiohttp.ClientResponse]:
        """Send with fail-over and (for safe calls) retries: the URL that answered, and its
        answer, which the caller reads and releases."""
        attempts = self.attempts(call)
        for pause, url in attempts:
            await asyncio.sleep(pause)
            try:
                response = await http.request(
                    call.method, url + call.target(), data=call.encoded(), headers=self.headers(call)
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                attempts.not_sent(url, exc)  # refused, unknown host, connect timeout: nothing was sent
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:  # a read timeout included
                attempts.broken(url, exc)
                continue
            if attempts.again(response.status):
                response.release()
                continue
            self.endpoints.good(url)
            return url, response
        raise attempts.exhausted() from attempts.last


class AsyncStream(StreamState):
    """``async for`` the outputs; ``session_id`` and ``done`` are set as the events arrive."""

    def __init__(self, client: AsyncClient, call: Call) -> None:
        super().__init__(call, client)
        self.client = client

    async def __aiter__(self) -> AsyncIterator[Any]:
        async with self.client._connections() as http:
            while True:
                url, response = await self.client._send(http, self.call)
                try:
                    async with response:
                        if response.status != 200:
                            _core.answer(
                                response.status, await response.read(), response.headers.get("Retry-After")
                            )
                        async for line in response.content:
                            for output in self.fresh(self.events.feed(line)):
                                yield output
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError) as exc:
                    self.cut(url, exc)
                    continue
                if self.done is not None:
                    return
                self.cut(url, None)


class AsyncSession:
    """One session's handle: calls go to its warm worker; ``await close()`` ends it."""

    def __init__(self, client: AsyncClient, app: str, session_id: str) -> None:
        self.client, self.app, self.id = client, app, session_id

    async def run(self, input: Any) -> dict[str, Any]:
        """One call on this session: ``{"session_id", "output", ...}``, as :meth:`AsyncClient.run`."""
        return await self.client.run({"app": self.app, "input": input, "session": self.id})

    def stream(self, input: Any) -> AsyncStream:
        return self.client.stream({"app": self.app, "input": input, "session": self.id})

    async def keepalive(self) -> dict[str, Any]:
        return await self.client.keepalive(self.id)

    async def suspend(self) -> dict[str, Any]:
        return await self.client.suspend(self.id)

    async def resume(self) -> dict[str, Any]:
        return await self.client.resume(self.id)

    async def info(self) -> dict[str, Any]:
        return await self.client.get_session(self.id)

    async def close(self) -> None:
        await self.client.close_session(self.id)
