"""A one-shot call's outcome as its Session keeps it: bounded, and given back as the worker gave it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubesessions.api.names import OUTCOME_ANNOTATION
from kubesessions.gateway import oneshot, remotetasks
from kubesessions.gateway.forward import Events
from kubesessions.gateway.problems import Problem

pytestmark = pytest.mark.unit
PRINT = oneshot.fingerprint("run", {"add": 1})


def view(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "k-1",
        "state": "finished",
        "cancelled": False,
        "streamed": False,
        "outputs": [],
        "error": None,
    }
    return {**base, **fields}


def session(record: str) -> dict[str, Any]:
    return {"metadata": {"name": "s-1", "annotations": {OUTCOME_ANNOTATION: record}}}


async def test_a_kept_outcome_is_given_back_as_the_worker_sent_it() -> None:
    record = oneshot.record(view(outputs=[{"total": 1}]), PRINT, 1024)
    kept = oneshot.recorded(session(record), "k-1")
    assert kept is not None and oneshot.recorded(session(record), "k-2") is None, "another call's"
    reply = await Events.again(oneshot.events(kept, PRINT)).reply("s-1")
    assert reply.output() == {"total": 1} and b'"session_closed":true' in reply.body("s-1")


async def test_a_kept_failure_is_raised_again() -> None:
    failed = view(error={"code": "RUN_FAILED", "status": 500, "detail": "boom"})
    kept = oneshot.recorded(session(oneshot.record(failed, PRINT, 1024)), "k-1")
    assert kept is not None
    with pytest.raises(Problem) as err:
        await Events.again(oneshot.events(kept, PRINT)).reply("s-1")
    assert (err.value.code, err.value.detail) == ("RUN_FAILED", "boom")


def test_an_output_over_the_limit_is_left_out_and_its_retry_refused() -> None:
    record = oneshot.record(view(outputs=["x" * 500]), PRINT, 200)
    assert len(record) <= 400 and "x" * 100 not in record
    kept = oneshot.recorded(session(record), "k-1")
    assert kept is not None
    with pytest.raises(Problem) as err:
        oneshot.events(kept, PRINT)
    assert err.value.code == "CALL_ALREADY_RAN" and "(504 bytes)" in err.value.detail
    assert "200 bytes" in err.value.detail
    task = remotetasks.from_call("t.x", "ns", "s-1", "echo", kept)
    assert (task["status"], task["output"]) == (10, None) and "200 bytes" in task["error"]


def test_a_failure_over_the_limit_keeps_its_code_and_the_start_of_its_detail() -> None:
    failed = view(error={"code": "RUN_FAILED", "status": 500, "detail": "y" * 5000})
    kept = json.loads(oneshot.record(failed, PRINT, 2000))
    assert kept["error"]["code"] == "RUN_FAILED" and len(kept["error"]["detail"]) == oneshot.DETAIL_CHARS


def test_the_same_key_with_another_input_is_refused() -> None:
    kept = oneshot.recorded(session(oneshot.record(view(outputs=[1]), PRINT, 1024)), "k-1")
    assert kept is not None
    with pytest.raises(Problem) as err:
        oneshot.events(kept, oneshot.fingerprint("run", {"add": 2}))
    assert err.value.code == "IDEMPOTENCY_KEY_REUSED"
