"""Exactly-once calls: a call id (``Idempotency-Key``) runs at most once per session; a retry
gets the recorded outcome, or attaches to the call still running or queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .harness import AUTH, FakeClock, Worker, until, worker

pytestmark = pytest.mark.unit
COUNTER = "kubesessions_worker.examples.counter:Counter"


async def call(w: Worker, input: Any, key: str | None, stream: bool = False) -> tuple[int, Any]:
    headers = {**AUTH, **({"Idempotency-Key": key} if key is not None else {})}
    body = {"input": input, "stream": stream}
    async with w.client.post("/run", json=body, headers=headers) as resp:
        return resp.status, (await resp.text() if stream else await resp.json(content_type=None))


async def test_a_retried_finished_call_returns_its_result_and_does_not_run_again() -> None:
    async with worker(COUNTER) as w:
        first = await call(w, {"add": 5}, "k-1")
        again = await call(w, {"add": 5}, "k-1")
        assert first == again == (200, again[1]) and again[1]["output"] == {"total": 5, "calls": 1}
        assert (await call(w, {"add": 1}, "k-2"))[1]["output"] == {"total": 6, "calls": 2}
        assert (await call(w, {"add": 1}, None))[1]["output"]["calls"] == 3, "no key: runs as before"
        assert w.runner.status().calls == 3


async def test_a_retry_of_a_running_call_attaches_to_it() -> None:
    async with worker("Gate") as w:
        first = asyncio.create_task(call(w, "held", "k-run"))
        await until(lambda: w.runner.status().in_flight == 1, "the call to start")
        second = asyncio.create_task(call(w, "held", "k-run"))
        queued = asyncio.create_task(call(w, "pass", "k-queued"))
        await until(lambda: w.runner.status().queued == 1, "the second key to queue")
        queued_again = asyncio.create_task(call(w, "pass", "k-queued"))
        w.app.release.set()
        results = await asyncio.gather(first, second, queued, queued_again)
        assert [r[1]["output"] for r in results] == ["held", "held", "pass", "pass"]
        assert w.app.log == [("start", "held"), ("end", "held"), ("start", "pass"), ("end", "pass")]
        assert w.runner.status().calls == 2


async def test_a_retried_stream_replays_its_events() -> None:
    async with worker("Tokens") as w:
        first = await call(w, ["a", "b"], "k-s", stream=True)
        assert (await call(w, ["a", "b"], "k-s", stream=True)) == first
        status, body = await call(w, ["a", "b"], "k-s")
        assert (status, body["output"]) == (200, ["a", "b"]), "a plain retry of a stream gets its list"
        assert w.runner.status().calls == 1


async def test_a_failed_call_is_retried_as_its_failure() -> None:
    async with worker("Boom") as w:
        assert (await call(w, "boom", "k-f"))[0] == 500
        status, body = await call(w, "boom", "k-f")
        assert (status, body["code"]) == (500, "RUN_FAILED")
        assert w.runner.status().calls == 1


async def test_a_key_reused_for_another_input_is_refused() -> None:
    async with worker(COUNTER) as w:
        await call(w, {"add": 1}, "k-x")
        status, body = await call(w, {"add": 2}, "k-x")
        assert (status, body["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
        assert "Idempotency-Key" in body["detail"]
        assert w.runner.status().calls == 1


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "a\tb"])
async def test_bad_keys_are_validation_problems(key: str) -> None:
    async with worker(COUNTER) as w:
        headers = {**AUTH, "Idempotency-Key": key}
        async with w.client.post("/run", json={"input": {}}, headers=headers) as resp:
            body = await resp.json()
        assert (resp.status, body["code"]) == (400, "VALIDATION")
        assert "Idempotency-Key" in body["detail"] and "1..200" in body["detail"]
        assert w.runner.status().calls == 0


async def test_a_key_never_runs_again_within_the_window_however_many_calls_follow() -> None:
    # The outcomes go by bytes; the ids stay for the whole window, whatever the count of calls.
    async with worker(COUNTER, call_retention_bytes=200) as w:
        assert (await call(w, {"add": 1}, "k-0"))[1]["output"]["calls"] == 1
        for n in range(1, 41):
            await call(w, {"add": 1}, f"k-{n}")
        status, body = await call(w, {"add": 1}, "k-0")
        assert (status, body.get("code")) == (409, "CALL_ALREADY_RAN"), body
        assert "600s" in body["detail"] and "200 bytes" in body["detail"]
        assert w.runner.status().calls == 41, "k-0 ran once"


async def test_an_outcome_is_kept_for_the_window_then_forgotten() -> None:
    clock = FakeClock()
    async with worker(COUNTER, call_retention=600, clock=clock) as w:
        first = await call(w, {"add": 5}, "k-1")
        clock.advance(599)
        assert await call(w, {"add": 5}, "k-1") == first, "within the window: the recorded outcome"
        clock.advance(2)
        status, body = await read(w, "k-1")
        assert (status, body["code"]) == (404, "CALL_NOT_FOUND"), "after the window: forgotten"
        assert (await call(w, {"add": 5}, "k-1"))[1]["output"]["calls"] == 2, "the id names a new call"


async def test_the_byte_budget_drops_results_too() -> None:
    async with worker("Echo", call_retention_bytes=200) as w:
        await call(w, "x" * 80, "big-1")
        await call(w, "y" * 80, "big-2")  # 146 bytes each, over the budget together: the oldest goes
        assert (await call(w, "y" * 80, "big-2"))[1]["output"] == "y" * 80
        assert (await call(w, "x" * 80, "big-1"))[1]["code"] == "CALL_ALREADY_RAN"
        assert (await read(w, "big-1"))[1]["code"] == "CALL_ALREADY_RAN"
        assert w.runner.status().calls == 2


async def read(w: Worker, key: str, wait: float = 0) -> tuple[int, Any]:
    async with w.client.get(f"/calls/{key}?wait={wait}", headers=AUTH) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_call_is_read_by_its_id_alone() -> None:
    # Another gateway replica knows the id, not the input: it reads the call's state and outcome.
    async with worker("Gate") as w:
        first = asyncio.create_task(call(w, "held", "k-a"))
        await until(lambda: w.runner.status().in_flight == 1, "the call to start")
        queued = asyncio.create_task(call(w, "next", "k-b"))
        await until(lambda: w.runner.status().queued == 1, "the second call to queue")
        assert (await read(w, "k-a"))[1]["state"] == "running"
        assert (await read(w, "k-b"))[1]["state"] == "queued"
        waiting = asyncio.create_task(read(w, "k-a", wait=30))
        w.app.release.set()
        status, done = await waiting  # answered when the call finished, not after 30 s
        assert status == 200 and done["state"] == "finished" and done["outputs"] == ["held"]
        assert done["error"] is None and not done["cancelled"]
        await asyncio.gather(first, queued)
        status, missing = await read(w, "k-nope")
        assert (status, missing["code"]) == (404, "CALL_NOT_FOUND")


async def test_cancelling_a_queued_call_means_it_never_runs() -> None:
    async with worker("Gate") as w:
        first = asyncio.create_task(call(w, "held", "k-1"))
        await until(lambda: w.runner.status().in_flight == 1, "the call to start")
        queued = asyncio.create_task(call(w, "never", "k-2"))
        await until(lambda: w.runner.status().queued == 1, "the second call to queue")
        async with w.client.post("/calls/k-2/cancel", headers=AUTH) as resp:
            view = await resp.json()
        assert view["state"] == "finished" and view["cancelled"] and view["error"]["code"] == "CANCELLED"
        status, body = await queued
        assert (status, body["code"]) == (409, "CANCELLED")
        # A running call runs to its end (the app's state stays whole), marked cancelled.
        async with w.client.post("/calls/k-1/cancel", headers=AUTH) as resp:
            assert (await resp.json())["state"] == "running"
        w.app.release.set()
        assert (await first)[1]["output"] == "held"
        assert (await read(w, "k-1"))[1] == {
            "id": "k-1",
            "state": "finished",
            "cancelled": True,
            "streamed": False,
            "outputs": ["held"],
            "error": None,
        }
        assert w.app.log == [("start", "held"), ("end", "held")], "the cancelled call never ran"


async def test_a_keyed_call_of_a_function_the_app_lacks_is_read_as_that_failure() -> None:
    # Refused before it could queue, it is still kept under its id: another gateway replica
    # following the task reads the failure, not "not found" (which reads as queued forever).
    async with worker(COUNTER) as w:
        headers = {**AUTH, "Idempotency-Key": "k-f"}
        body = {"input": {}, "function": "nope"}
        async with w.client.post("/run", json=body, headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "VALIDATION"
        status, view = await read(w, "k-f")
        assert status == 200 and view["state"] == "finished", view
        assert view["error"]["code"] == "VALIDATION" and "nope" in view["error"]["detail"]
        async with w.client.post("/run", json=body, headers=headers) as resp:
            assert resp.status == 400, "a retry gets the same refusal"
        assert w.runner.status().calls == 0
