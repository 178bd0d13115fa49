"""The HTTP surface: auth, problem+json, JSON and SSE replies, probes, status, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest

from kubesessions_worker import http
from kubesessions_worker.runner import State
from kubesessions_worker.termination import Reason

from .harness import AUTH, TOKEN, FakeClock, until, worker

pytestmark = pytest.mark.unit

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "other-scheme", "no-scheme"],
)
async def test_calls_without_the_token_are_refused(headers: dict[str, str]) -> None:
    async with worker("Echo") as w:
        for method, path in (("POST", "/run"), ("GET", "/status"), ("GET", "/metrics"), ("POST", "/close")):
            async with w.client.request(method, path, json={"input": 1}, headers=headers) as resp:
                assert resp.status == 401, path
                assert resp.content_type == PROBLEM
                assert (await resp.json(content_type=None))["code"] == "UNAUTHORIZED"
                assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert w.runner.state is State.READY  # /close without the token did nothing
        assert w.runner.status().calls == 0


async def test_probes_need_no_token() -> None:
    async with worker("Echo") as w:
        for path in ("/healthz", "/readyz"):
            async with w.client.get(path) as resp:
                assert resp.status == 200
                assert (await resp.json())["state"] == "READY"


async def test_the_token_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with worker("Boom") as w:
        async with w.client.post(
            "/run", json={"input": 1}, headers={"Authorization": f"Bearer {TOKEN}x"}
        ) as resp:
            assert resp.status == 401
        assert (await w.call("boom"))[0] == 500  # logged with its traceback
        assert (await w.call("ok"))[0] == 200
    assert caplog.records, "the worker should have logged something"
    assert TOKEN not in caplog.text


async def test_run_answers_output_and_duration() -> None:
    async with worker("Echo") as w:
        status, body = await w.call({"nested": [1, 2.5, None, "x"]})
        assert status == 200
        assert body["output"] == {"nested": [1, 2.5, None, "x"]}
        assert body["sessionClosed"] is False
        assert isinstance(body["durationMs"], float) and body["durationMs"] >= 0


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", '"input"'),
        (b'{"inputs": 1}', '"input"'),
        (b'{"input": 1, "stream": "yes"}', "stream"),
    ],
)
async def test_bad_bodies_are_validation_problems(raw: bytes, detail: str) -> None:
    async with worker("Echo") as w:
        async with w.client.post("/run", data=raw, headers=AUTH) as resp:
            assert resp.status == 400
            assert resp.content_type == PROBLEM
            body = await resp.json(content_type=None)
        assert body["code"] == "VALIDATION"
        assert detail in body["detail"]
        assert body["type"] == "about:blank" and body["title"] == "Bad Request" and body["status"] == 400


async def test_oversized_body_is_payload_too_large() -> None:
    async with worker("Echo", max_body_bytes=1024) as w:
        status, body = await w.call("x" * 2048)
        assert (status, body["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_exception_in_run_is_500_and_the_session_lives_on() -> None:
    async with worker("Boom") as w:
        status, body = await w.call("boom")
        assert status == 500
        assert body["code"] == "RUN_FAILED"
        assert body["errorType"] == "ValueError"
        assert body["detail"] == "cannot digest boom"
        status, body = await w.call("again")
        assert (status, body["output"]) == (200, "again")


async def test_full_queue_is_429_with_retry_after() -> None:
    async with worker("Gate", queue_size=1) as w:
        first = asyncio.create_task(w.call("first"))
        await until(lambda: w.runner.status().in_flight, "the first call to run")
        second = asyncio.create_task(w.call("second"))
        await until(lambda: w.runner.status().queued == 1, "the second call to wait")
        async with w.client.post("/run", json={"input": "third"}, headers=AUTH) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json(content_type=None))["code"] == "QUEUE_FULL"
        w.app.release.set()
        assert [(await t)[1]["output"] for t in (first, second)] == ["first", "second"]


async def test_concurrent_http_calls_run_one_at_a_time_in_arrival_order() -> None:
    async with worker("Gate") as w:
        tasks = []
        for i in range(8):
            tasks.append(asyncio.create_task(w.call(i)))
            await until(
                lambda n=i + 1: w.runner.status().in_flight + w.runner.status().queued == n, f"call {i}"
            )
        w.app.release.set()
        assert [(await t)[1]["output"] for t in tasks] == list(range(8))
        assert w.app.max_active == 1
        assert w.app.log == [(step, i) for i in range(8) for step in ("start", "end")]


async def test_stream_sends_outputs_then_done() -> None:
    async with worker("Tokens") as w:
        events = await w.events(["a", "b", "c"])
        assert [name for name, _ in events] == ["output", "output", "output", "done"]
        assert [json.loads(data) for _, data in events[:3]] == ["a", "b", "c"]
        done = json.loads(events[3][1])
        assert done["sessionClosed"] is False and done["durationMs"] >= 0


async def test_stream_failure_ends_with_an_error_event() -> None:
    async with worker("Tokens") as w:
        events = await w.events(["a", "boom", "never"])
        assert [name for name, _ in events] == ["output", "error"]
        problem = json.loads(events[1][1])
        assert (problem["code"], problem["status"], problem["errorType"]) == ("RUN_FAILED", 500, "ValueError")
        assert (await w.call(["after"]))[1]["output"] == ["after"]  # a plain request gets the list


async def test_accept_header_asks_for_a_stream_and_a_single_value_streams_once() -> None:
    async with worker("AsyncTokens") as w:
        headers = {**AUTH, "Accept": "text/event-stream"}
        async with w.client.post("/run", json={"input": ["x", "y"]}, headers=headers) as resp:
            text = await resp.text()
        assert re.findall(r"event: (\w+)", text) == ["output", "output", "done"]
    async with worker("Echo") as w:
        assert [name for name, _ in await w.events("one")] == ["output", "done"]


async def test_a_quick_call_is_answered_whole_and_a_long_one_gets_its_headers_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = {**AUTH, "Accept": "text/event-stream"}
    # "Quick" made long enough that a loaded machine's thread hand-off always fits in it.
    monkeypatch.setattr(http, "QUICK_SECONDS", 30.0)
    async with worker("Echo") as w, w.client.post("/run", json={"input": "hi"}, headers=headers) as resp:
        # Headers and events in one answer of known length: its reader wakes once.
        assert "Content-Length" in resp.headers and "Transfer-Encoding" not in resp.headers
        assert re.findall(r"event: (\w+)", await resp.text()) == ["output", "done"]
    monkeypatch.undo()
    async with worker("Gate") as w, w.client.post("/run", json={"input": "slow"}, headers=headers) as resp:
        # The headers tell the caller the call is queued (the gateway's ordering), long before it ends.
        assert (resp.status, resp.content_type) == (200, "text/event-stream")
        assert w.runner.status().in_flight == 1
        w.app.release.set()
        assert re.findall(r"event: (\w+)", await resp.text()) == ["output", "done"]


async def test_a_refused_stream_is_a_plain_problem() -> None:
    async with worker("Gate", queue_size=0) as w:
        first = asyncio.create_task(w.call("first"))
        await until(lambda: w.runner.status().in_flight, "the first call to run")
        async with w.client.post("/run", json={"input": 1, "stream": True}, headers=AUTH) as resp:
            assert (resp.status, resp.content_type) == (429, PROBLEM)
        w.app.release.set()
        await first


async def test_not_ready_while_setup_runs(tmp_path: Path) -> None:
    release = tmp_path / "release"
    async with worker("SlowSetup", setup=False) as w:
        setup = asyncio.create_task(w.runner.setup({"release": str(release)}))
        async with w.client.get("/readyz") as resp:
            assert (resp.status, (await resp.json())["state"]) == (503, "STARTING")
        status, body = await w.call(1)
        assert (status, body["code"]) == (503, "NOT_READY")
        release.touch()
        await asyncio.wait_for(setup, 10)
        async with w.client.get("/readyz") as resp:
            assert resp.status == 200


async def test_status_has_the_contract_shape() -> None:
    async with worker("Echo") as w:
        await w.call(1)
        async with w.client.get("/status", headers=AUTH) as resp:
            status = await resp.json()
    assert set(status) == {
        "state",
        "sessionId",
        "lastActivity",
        "idleSeconds",
        "inFlight",
        "queued",
        "calls",
        "uptimeSeconds",
        "sessionTimeout",
        "gpu",
        "heldSeconds",
        "suspendable",
    }
    assert status["state"] == "READY" and status["sessionId"] == "s-test"
    assert status["suspendable"] is False  # Echo has no suspend/resume
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status["lastActivity"])
    assert (status["inFlight"], status["queued"], status["calls"], status["sessionTimeout"]) == (0, 0, 1, 60)
    assert status["gpu"]["available"] is False and status["gpu"]["reason"]


async def test_metrics_count_calls_and_rejections() -> None:
    async with worker("Boom", queue_size=0) as w:
        await w.call("ok")
        await w.call("boom")
        async with w.client.get("/metrics", headers=AUTH) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
    assert 'kubesessions_worker_calls_total{outcome="ok"} 1' in text
    assert 'kubesessions_worker_calls_total{outcome="run_failed"} 1' in text
    assert "kubesessions_worker_call_duration_seconds_count 2" in text
    assert 'kubesessions_worker_call_duration_seconds_bucket{le="+Inf"} 2' in text
    assert 'kubesessions_worker_state{state="READY"} 1' in text
    assert "kubesessions_worker_queue_depth 0" in text
    assert "kubesessions_worker_gpu_available 0" in text


async def test_close_answers_202_and_ends_the_session() -> None:
    async with worker("Ender") as w:
        async with w.client.post("/close", headers=AUTH) as resp:
            assert resp.status == 202
        assert (await w.runner.ending()).reason is Reason.CLOSED
        status, body = await w.call(1)
        assert (status, body["code"]) == (410, "SESSION_ENDED")
        async with w.client.get("/readyz") as resp:
            assert resp.status == 503


async def test_end_session_reply_says_closed() -> None:
    async with worker("Ender") as w:
        status, body = await w.call("bye")
        assert (status, body["output"], body["sessionClosed"]) == (200, "bye", True)
        assert (await w.runner.ending()).reason is Reason.CLOSED_BY_APP


async def test_call_timeout_is_504() -> None:
    async with worker("Gate", call_timeout=0.05) as w:
        status, body = await w.call("stuck")
        assert (status, body["code"]) == (504, "CALL_TIMEOUT")


async def test_keepalive_stamps_activity() -> None:
    clock = FakeClock()
    async with worker("Echo", clock=clock) as w:
        clock.advance(30)
        assert w.runner.idle_seconds() == 30
        async with w.client.post("/keepalive", headers=AUTH) as resp:
            assert resp.status == 200
            assert (await resp.json())["lastActivity"].startswith("2030-01-01T00:00:30")
        assert w.runner.idle_seconds() == 0
        async with w.client.post("/keepalive") as resp:
            assert resp.status == 401


async def test_close_if_idle_closes_only_an_idle_session() -> None:
    clock = FakeClock()
    async with worker("Echo", clock=clock) as w:
        clock.advance(5)
        async with w.client.post("/close?ifIdleFor=10", headers=AUTH) as resp:
            assert resp.status == 409
            body = await resp.json()
            assert (body["idleSeconds"], body["remainingSeconds"]) == (5, 5)
        assert w.runner.state is State.READY
        clock.advance(5)
        async with w.client.post("/close?ifIdleFor=10", headers=AUTH) as resp:
            assert resp.status == 202
        ending = await w.runner.ending()
        assert ending.reason is Reason.IDLE_TIMEOUT


async def test_close_if_idle_never_ends_a_call_in_flight() -> None:
    clock = FakeClock()
    async with worker("Gate", clock=clock) as w:
        call = asyncio.create_task(w.call("hold"))
        await until(lambda: w.runner.status().in_flight, "the call to start")
        clock.advance(3600)
        async with w.client.post("/close?ifIdleFor=1", headers=AUTH) as resp:
            assert resp.status == 409
        w.app.release.set()
        assert (await call)[0] == 200
        assert w.runner.state is State.READY


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1e9"])
async def test_close_if_idle_validates(value: str) -> None:
    async with worker("Echo") as w, w.client.post(f"/close?ifIdleFor={value}", headers=AUTH) as resp:
        assert resp.status == 400
        assert "ifIdleFor" in (await resp.json())["detail"]
