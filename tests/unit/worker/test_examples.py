"""The shipped example apps do what their docstrings promise."""

from __future__ import annotations

import json

import pytest

from .harness import worker

pytestmark = pytest.mark.unit

EXAMPLES = "kubesessions_worker.examples"


async def test_echo() -> None:
    async with worker(f"{EXAMPLES}.echo:Echo") as w:
        assert (await w.call({"a": [1, "b"]}))[1]["output"] == {"a": [1, "b"]}


async def test_counter_keeps_state_and_cleanup_ends_the_session() -> None:
    async with worker(f"{EXAMPLES}.counter:Counter", config={"start": 10}) as w:
        assert [(await w.call({"add": n}))[1]["output"]["total"] for n in (1, 2, 3)] == [11, 13, 16]
        assert (await w.call({}))[1]["output"]["total"] == 17
        status, body = await w.call({"action": "cleanup"})
        assert (status, body["output"]["total"], body["sessionClosed"]) == (200, 17, True)


async def test_stream_yields_tokens() -> None:
    async with worker(f"{EXAMPLES}.stream:Stream") as w:
        events = await w.events({"text": "one two  three"})
        assert [json.loads(data) for name, data in events if name == "output"] == ["one", "two", "three"]
        assert events[-1][0] == "done"


async def test_slow_sleeps_off_the_event_loop() -> None:
    async with worker(f"{EXAMPLES}.slow:Slow") as w:
        assert (await w.call({"seconds": 0.01}))[1]["output"] == {"slept": 0.01}


async def test_model_does_the_heavy_work_in_setup() -> None:
    async with worker(f"{EXAMPLES}.model:Model", config={"size": 100}) as w:
        first, second = (await w.call({"seed": 1}))[1]["output"], (await w.call({"seed": 1}))[1]["output"]
    assert first["x0"] == second["x0"]
    assert first["residual"] < 1e-8
    assert first["setupSeconds"] >= 0 and first["runSeconds"] >= 0
