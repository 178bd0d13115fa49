"""The client against a fake gateway: the dict shape, typed errors, retries, fail-over, streams, sessions."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubesessions.client import (
    AppMismatch,
    AsyncClient,
    AsyncRecoveringSession,
    Client,
    Forbidden,
    GatewayUnavailable,
    QueueFull,
    RecoveringSession,
    Retry,
    RunFailed,
    ServiceAccountToken,
    SessionEnded,
    SessionExpired,
    SessionNotFound,
    Unauthorized,
    WorkerUnavailable,
)
from kubesessions.client._core import Endpoints, Events
from kubesessions.client.errors import from_problem

pytestmark = pytest.mark.unit
FAST = Retry(attempts=3, backoff=0.001, max_backoff=0.002)


def problem(status: int, code: str, detail: str, **headers: str) -> web.Response:
    body = {"type": "about:blank", "status": status, "code": code, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json", headers=headers)


class FakeGateway:
    """Just enough of the gateway: sessions of a counter app, and knobs to make it fail."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.expired: set[str] = set()
        self.unavailable_gets = 0  # answer this many GETs with 503 first
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/run", self.run)
        self.app.router.add_post("/v1/sessions", self.create)
        self.app.router.add_get("/v1/sessions/{id}", self.get)
        self.app.router.add_delete("/v1/sessions/{id}", self.delete)

    def _new(self) -> str:
        sid = f"s-{len(self.totals)}"
        self.totals[sid] = 0
        return sid

    async def run(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(("run", request.headers.get("Authorization", ""), dict(request.headers)))
        if request.headers.get("Authorization") != "Bearer t":
            return problem(401, "UNAUTHORIZED", "a bearer token is required")
        if body.get("app") == "forbidden":
            return problem(403, "UNAUTHORIZED", "me may not create sessions")
        sid = self._new() if body.get("session") in (None, "new") else body["session"]
        if sid in self.expired:
            return problem(410, "SESSION_EXPIRED", f"session not found: {sid} has expired")
        if sid not in self.totals:
            return problem(404, "SESSION_NOT_FOUND", f"session not found: {sid}")
        if body.get("app") != "counter":
            return problem(400, "APP_MISMATCH", f'session {sid} runs app "counter"')
        if body["input"] == "full":
            return problem(429, "QUEUE_FULL", "queue full", **{"Retry-After": "3"})
        if body["input"] == "boom":
            return problem(500, "RUN_FAILED", "ValueError: boom")
        self.totals[sid] += int(body["input"].get("add", 1))
        if not body.get("stream"):
            return web.json_response(
                {"session_id": sid, "output": {"total": self.totals[sid]}, "session_closed": False}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f'event: session\ndata: {{"session_id": "{sid}"}}\n\n'.encode())
        for word in ("a", "b"):
            await response.write(f'event: output\ndata: "{word}"\n\n'.encode())
        await response.write(b'event: done\ndata: {"session_closed": false, "duration_ms": 1}\n\n')
        return response

    async def create(self, request: web.Request) -> web.Response:
        return web.json_response({"session_id": self._new(), "phase": "Ready"}, status=201)

    async def get(self, request: web.Request) -> web.Response:
        if self.unavailable_gets:
            self.unavailable_gets -= 1
            return problem(503, "WORKER_UNAVAILABLE", "try again")
        sid = request.match_info["id"]
        return web.json_response(
            {"session_id": sid, "phase": "Closed" if sid not in self.totals else "Ready"}
        )

    async def delete(self, request: web.Request) -> web.Response:
        self.totals.pop(request.match_info["id"], None)
        return web.Response(status=204)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def fake() -> Iterator[tuple[FakeGateway, str]]:
    """The fake gateway on its own thread and loop, so the blocking client can call it."""
    gateway, port, started = FakeGateway(), _free_port(), threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(gateway.app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())
    thread = threading.Thread(target=lambda: (started.set(), loop.run_forever()), daemon=True)
    thread.start()
    started.wait()
    yield gateway, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def client(fake: tuple[FakeGateway, str]) -> Iterator[Client]:
    with Client(fake[1], token="t", namespace="team", retry=FAST) as c:
        yield c


def test_run_takes_and_returns_the_reference_shape(client: Client, fake: tuple[FakeGateway, str]) -> None:
    first = client.run({"app": "counter", "input": {"add": 2}, "session": "new", "session_timeout": 300})
    again = client.run({"app": "counter", "input": {"add": 3}, "session": first["session_id"]})
    assert (first["output"], again["output"], again["session_id"]) == (
        {"total": 2},
        {"total": 5},
        first["session_id"],
    )
    headers = fake[0].seen[-1][2]
    assert headers["X-Kubesessions-Namespace"] == "team"


@pytest.mark.parametrize(
    ("params", "error", "text"),
    [
        ({"app": "counter", "input": {}, "session": "s-gone"}, SessionNotFound, "session not found"),
        ({"app": "echo", "input": {}, "session": "new"}, AppMismatch, "runs app"),
        ({"app": "counter", "input": "full", "session": "new"}, QueueFull, "queue full"),
        ({"app": "forbidden", "input": {}}, Forbidden, "may not"),
    ],
)
def test_errors_are_typed_and_read_naturally(
    client: Client, params: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text) as err:
        client.run(params)
    if isinstance(err.value, QueueFull):
        assert err.value.retry_after == 3.0


def test_expired_is_a_session_not_found_whose_text_says_so(
    client: Client, fake: tuple[FakeGateway, str]
) -> None:
    sid = client.run({"app": "counter", "input": {}, "session": "new"})["session_id"]
    fake[0].expired.add(sid)
    with pytest.raises(SessionExpired) as err:
        client.run({"app": "counter", "input": {}, "session": sid})
    assert isinstance(err.value, SessionNotFound) and "session not found" in str(err.value).lower()
    assert err.value.status == 410


def test_no_token_is_unauthorized(fake: tuple[FakeGateway, str]) -> None:
    with Client(fake[1], token=lambda: None) as anonymous, pytest.raises(Unauthorized) as err:
        anonymous.run({"app": "counter", "input": {}})
    assert not isinstance(err.value, Forbidden)


def test_safe_calls_are_retried_on_503_and_runs_are_not(
    client: Client, fake: tuple[FakeGateway, str]
) -> None:
    fake[0].unavailable_gets = 2
    assert client.get_session("s-x")["session_id"] == "s-x"
    fake[0].unavailable_gets = 5
    with pytest.raises(WorkerUnavailable):
        client.get_session("s-x")


def test_fail_over_to_the_next_url_and_remember_it(fake: tuple[FakeGateway, str]) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with Client([dead, fake[1]], token="t", retry=FAST) as c:
        assert c.run({"app": "counter", "input": {}, "session": "new"})["output"] == {"total": 1}
        assert c.endpoints.order()[0] == fake[1]
    with (
        Client([dead], token="t", retry=FAST) as c,
        pytest.raises(GatewayUnavailable, match="no gateway answered"),
    ):
        c.run({"app": "counter", "input": {}})


def test_stream_yields_outputs_and_knows_its_session(client: Client) -> None:
    stream = client.stream({"app": "counter", "input": {}, "session": "new"})
    assert list(stream) == ["a", "b"]
    assert stream.session_id == "s-0" and stream.done == {"session_closed": False, "duration_ms": 1}


def test_session_context_manager_closes_even_on_error(client: Client, fake: tuple[FakeGateway, str]) -> None:
    seen: list[str] = []

    def use() -> None:
        with client.session("counter", timeout=60) as session:
            seen.append(session.id)
            assert session.run({"add": 4}) == {"total": 4}
            raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError):
        use()
    assert seen and seen[0] not in fake[0].totals


def test_recovering_session_replays_after_expiry(client: Client, fake: tuple[FakeGateway, str]) -> None:
    manager = RecoveringSession(client, "counter", timeout=60, init={"add": 10})
    assert manager.run({"add": 1})["output"] == {"total": 11}
    assert manager.session_id is not None
    fake[0].expired.add(manager.session_id)
    assert manager.run({"add": 1})["output"] == {"total": 11}
    assert manager.recoveries == 1
    strict = RecoveringSession(client, "counter", recover=False)
    strict.run({})
    assert strict.session_id is not None
    fake[0].expired.add(strict.session_id)
    with pytest.raises(SessionExpired):
        strict.run({})


async def test_async_recovering_session_replays_after_expiry(fake: tuple[FakeGateway, str]) -> None:
    async with AsyncClient(fake[1], token="t", retry=FAST) as c:
        async with AsyncRecoveringSession(c, "counter", timeout=60, init={"add": 10}) as manager:
            assert (await manager.run({"add": 1}))["output"] == {"total": 11}
            first = manager.session_id
            assert first is not None
            fake[0].expired.add(first)
            assert (await manager.run({"add": 1}))["output"] == {"total": 11}
            assert manager.recoveries == 1 and manager.session_id not in (None, first)
            live = manager.session_id
        assert manager.session_id is None and live not in fake[0].totals, "closed on leaving the block"
        strict = AsyncRecoveringSession(c, "counter", recover=False)
        await strict.ensure_session()
        assert strict.session_id is not None
        fake[0].expired.add(strict.session_id)
        with pytest.raises(SessionExpired):
            await strict.run({})


class ScriptedClient:
    """A client that records the calls a recovering session makes; runs on ``lost`` ids fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lost: set[str] = set()

    def create_session(self, app: str, timeout: int | None) -> dict[str, Any]:
        self.calls.append(("create", (app, timeout)))
        return {"session_id": f"s-{len(self.calls)}"}

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("run", (params["session"], params["input"])))
        if params["session"] in self.lost:
            raise SessionExpired("session not found: expired", status=410)
        session = f"s-{len(self.calls)}" if params["session"] == "new" else params["session"]
        return {"session_id": session, "output": params["input"]}

    def close_session(self, session_id: str) -> None:
        self.calls.append(("close", session_id))


def test_recovery_plan_starts_once_replays_once_and_closes() -> None:
    scripted = ScriptedClient()
    manager = RecoveringSession(scripted, "counter", timeout=5)  # type: ignore[arg-type]
    manager.run("a")
    scripted.lost.add("s-1")
    assert manager.run("b") == {"session_id": "s-4", "output": "b"}
    manager.close()
    manager.close()  # nothing left to close
    assert scripted.calls == [
        ("create", ("counter", 5)),
        ("run", ("s-1", "a")),  # no init: a session without a call
        ("run", ("s-1", "b")),
        ("create", ("counter", 5)),
        ("run", ("s-4", "b")),  # expired: new, replay
        ("close", "s-4"),
    ]
    assert (manager.recoveries, manager.session_id) == (1, None)
    scripted.lost.add("s-4")
    again = RecoveringSession(scripted, "counter", init="setup")  # type: ignore[arg-type]
    scripted.calls.clear()
    again.run("c")
    assert scripted.calls[0] == ("run", ("new", "setup")), "init starts the session with a call"


def test_recovery_gives_up_after_one_replay() -> None:
    scripted = ScriptedClient()
    manager = RecoveringSession(scripted, "counter")  # type: ignore[arg-type]
    manager.ensure_session()
    scripted.lost.update({"s-1", "s-3"})  # the replacement is lost as well
    with pytest.raises(SessionExpired):
        manager.run("x")
    assert manager.recoveries == 1


async def test_async_client_has_the_same_api(fake: tuple[FakeGateway, str]) -> None:
    async with AsyncClient(["http://127.0.0.1:1", fake[1]], token="t", retry=FAST) as c:
        first = await c.run({"app": "counter", "input": {"add": 1}, "session": "new"})
        results = await asyncio.gather(
            *(
                c.run({"app": "counter", "input": {"add": 1}, "session": first["session_id"]})
                for _ in range(5)
            )
        )
        assert sorted(r["output"]["total"] for r in results) == [2, 3, 4, 5, 6]
        stream = c.stream({"app": "counter", "input": {}, "session": "new"})
        assert [x async for x in stream] == ["a", "b"]
        async with c.session("counter") as session:
            assert await session.run({"add": 2}) == {"total": 2}
        assert session.id not in fake[0].totals
        with pytest.raises(SessionNotFound):
            await c.run({"app": "counter", "input": {}, "session": "s-nope"})


def test_events_raise_the_typed_error_of_an_error_event() -> None:
    events = Events()
    lines = [
        b"event: session\n",
        b'data: {"session_id": "s-1"}\n',
        b"\n",
        b"event: error\n",
        b'data: {"status": 500, "code": "RUN_FAILED", "detail": "ValueError: x", "errorType": "ValueError"}\n',
    ]
    for line in lines:
        assert events.feed(line) == []
    with pytest.raises(RunFailed) as err:
        events.feed(b"\n")
    assert (err.value.error_type, err.value.session_id) == ("ValueError", "s-1")


def test_problems_from_proxies_still_become_typed_errors() -> None:
    assert isinstance(from_problem(502, {"detail": "bad gateway"}), WorkerUnavailable)
    assert isinstance(from_problem(410, {"code": "SESSION_ENDED", "detail": "x"}), SessionEnded)
    assert type(from_problem(418, {})).__name__ == "KubeSessionsError"


def test_endpoints_put_a_failed_url_last_for_a_while() -> None:
    endpoints = Endpoints(["http://a", "http://b/"])
    endpoints.bad("http://a")
    assert endpoints.order() == ["http://b", "http://a"]


def test_service_account_token_is_reread_when_rotated(tmp_path: Path) -> None:
    path = tmp_path / "token"
    provider = ServiceAccountToken(path)
    assert provider() is None
    path.write_text("one\n")
    assert provider() == "one"
    path.write_text("two")
    os.utime(path, (1, 1))
    assert provider() == "two"
