"""Apps with several functions: `run` by default, others by name, unknown ones refused by name."""

from __future__ import annotations

import pytest

from .harness import worker

pytestmark = pytest.mark.unit
COUNTER = "kubesessions_worker.examples.counter:Counter"


async def test_named_functions_share_the_sessions_state() -> None:
    async with worker(COUNTER) as w:
        assert (await w.call({"add": 5}))[1]["output"] == {"total": 5, "calls": 1}
        assert (await w.call({}, function="peek"))[1]["output"] == {"total": 5, "calls": 1}
        assert (await w.call({"to": 2}, function="reset"))[1]["output"]["total"] == 2
        assert (await w.call({"add": 1}, function="run"))[1]["output"] == {"total": 3, "calls": 2}


@pytest.mark.parametrize("name", ["navigate", "setup", "close", "__init__"])
async def test_an_unknown_function_is_a_400_naming_the_ones_there_are(name: str) -> None:
    async with worker(COUNTER) as w:
        status, problem = await w.call({}, function=name)
        assert (status, problem["code"]) == (400, "VALIDATION")
        assert problem["functions"] == ["peek", "reset", "run"]
        assert "peek, reset, run" in problem["detail"] and repr(name) in problem["detail"]
        assert (await w.call({}, function="peek"))[1]["output"]["calls"] == 0, "nothing ran"


async def test_a_function_name_must_be_a_string() -> None:
    async with worker("Echo") as w:
        status, problem = await w.call(1, function=3)
        assert (status, problem["code"]) == (400, "VALIDATION")
        assert "'function'" in problem["detail"]
