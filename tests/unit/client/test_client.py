"""The client against a fake gateway: the dict shape, typed errors, retries, fail-over, streams, sessions."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesessions.client import (
    AppMismatch,
    AsyncClient,
    AsyncRecoveringSession,
    Client,
    Forbidden,
    GatewayUnavailable,
    QueueFull,
    RecoveringSession,
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

from .fakegateway import FAST, FakeGateway, free_port

pytestmark = pytest.mark.unit


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


def test_each_retry_is_told_to_the_retry_hook(fake: tuple[FakeGateway, str]) -> None:
    seen: list[str] = []
    fake[0].unavailable_gets = 2
    with Client(fake[1], token="t", retry=dataclasses.replace(FAST, on_retry=seen.append)) as c:
        assert c.get_session("s-x")["session_id"] == "s-x"
    assert seen == ["HTTP 503", "HTTP 503"]


def test_fail_over_to_the_next_url_and_remember_it(fake: tuple[FakeGateway, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
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
        with client.session("counter", session_timeout=60) as session:
            seen.append(session.id)
            assert session.run({"add": 4})["output"] == {"total": 4}
            raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError):
        use()
    assert seen and seen[0] not in fake[0].totals


def test_recovering_session_replays_after_expiry(client: Client, fake: tuple[FakeGateway, str]) -> None:
    manager = RecoveringSession(client, "counter", session_timeout=60, init={"add": 10})
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
        async with AsyncRecoveringSession(c, "counter", session_timeout=60, init={"add": 10}) as manager:
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

    def create_session(self, app: str, session_timeout: int | None) -> dict[str, Any]:
        self.calls.append(("create", (app, session_timeout)))
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
    manager = RecoveringSession(scripted, "counter", session_timeout=5)  # type: ignore[arg-type]
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
            assert (await session.run({"add": 2}))["output"] == {"total": 2}
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
        b'data: {"status": 500, "code": "RUN_FAILED", "detail": "ValueError: x", "error_type": "ValueError"}\n',
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


def test_the_gateway_token_comes_from_its_own_variable(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESESSIONS_SESSION_TOKEN", "a-worker-token")
    monkeypatch.setenv("KUBESESSIONS_GATEWAY_TOKEN", "t")
    with Client(fake[1]) as c:
        c.run({"app": "counter", "input": {}, "session": "new"})
    assert fake[0].seen[-1][1] == "Bearer t"


def test_service_account_token_is_reread_when_rotated(tmp_path: Path) -> None:
    path = tmp_path / "token"
    provider = ServiceAccountToken(path)
    assert provider() is None
    path.write_text("one\n")
    assert provider() == "one"
    path.write_text("two")
    os.utime(path, (1, 1))
    assert provider() == "two"
