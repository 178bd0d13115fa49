"""The runner: FIFO, one call at a time, bounded queue, timeouts, activity, endings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubesessions_worker import end_session
from kubesessions_worker.runner import Call, Done, Failed, Output, Runner, State
from kubesessions_worker.termination import Reason

from .harness import FakeClock, runner_for, until

pytestmark = pytest.mark.unit


async def outcome(call: Call) -> tuple[list[str], Done | Failed]:
    async with asyncio.timeout(10):
        events = [event async for batch in call.follow() for event in batch]
    end = events.pop()
    assert isinstance(end, Done | Failed) and all(isinstance(e, Output) for e in events)
    return [e.json for e in events if isinstance(e, Output)], end


async def queued_in_order(runner: Runner, inputs: list[Any]) -> list[Call]:
    calls = []
    for value in inputs:
        calls.append(runner.submit(value))
        await asyncio.sleep(0)  # let the serving loop take the first one
    return calls


async def test_calls_never_overlap_and_run_in_arrival_order() -> None:
    async with runner_for("Gate") as runner:
        calls = await queued_in_order(runner, list(range(6)))
        await until(lambda: runner.status().in_flight == 1, "the first call to start")
        assert runner.status().queued == 5
        assert runner.state is State.BUSY
        runner.app.instance.release.set()
        results = [await outcome(c) for c in calls]
        assert [outputs for outputs, _ in results] == [[str(i)] for i in range(6)]
        assert all(isinstance(done, Done) for _, done in results)
        app = runner.app.instance
        assert app.max_active == 1
        assert app.log == [(step, i) for i in range(6) for step in ("start", "end")]
        assert runner.state is State.READY
        assert runner.status().calls == 6


async def test_queue_bound_refuses_with_retry_after() -> None:
    async with runner_for("Gate", queue_size=2) as runner:
        calls = await queued_in_order(runner, ["a", "b", "c"])  # one runs, two wait
        with pytest.raises(Exception, match="QUEUE_FULL") as refused:
            runner.submit("d")
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1  # type: ignore[attr-defined]
        assert runner.stats.rejected["QUEUE_FULL"] == 1
        runner.app.instance.release.set()
        assert [(await outcome(c))[0] for c in calls] == [['"a"'], ['"b"'], ['"c"']]


async def test_queue_size_zero_means_only_the_running_call() -> None:
    async with runner_for("Gate", queue_size=0) as runner:
        first = runner.submit("a")
        with pytest.raises(Exception, match="QUEUE_FULL"):
            runner.submit("b")
        runner.app.instance.release.set()
        assert (await outcome(first))[0] == ['"a"']


async def test_exception_in_run_fails_that_call_only() -> None:
    async with runner_for("Boom") as runner:
        _, failed = await outcome(runner.submit("boom"))
        assert isinstance(failed, Failed)
        body = failed.problem.body()
        assert (body["status"], body["code"], body["errorType"]) == (500, "RUN_FAILED", "ValueError")
        assert "cannot digest boom" in body["detail"]
        outputs, done = await outcome(runner.submit("fine"))
        assert (outputs, type(done)) == (['"fine"'], Done)
        assert runner.state is State.READY
        assert runner.stats.outcomes == {"run_failed": 1, "ok": 1}


async def test_a_stop_iteration_out_of_sync_code_fails_that_call_at_once() -> None:
    # A future refuses StopIteration: handed back as it was, the call hung until its timeout.
    async with runner_for("Boom", call_timeout=600) as runner:
        _, failed = await outcome(runner.submit("empty"))
        assert isinstance(failed, Failed)
        body = failed.problem.body()
        assert (body["code"], body["errorType"]) == ("RUN_FAILED", "RuntimeError")
        assert "StopIteration" in body["detail"]
        outputs, done = await outcome(runner.submit("fine"))
        assert (outputs, type(done)) == (['"fine"'], Done)


async def test_output_that_is_not_json_fails_the_call() -> None:
    async with runner_for("Unserialisable") as runner:
        _, failed = await outcome(runner.submit(1))
        assert isinstance(failed, Failed)
        assert failed.problem.code == "RUN_FAILED"
        assert failed.problem.members["errorType"] == "TypeError"


async def test_async_call_past_its_timeout_is_cancelled() -> None:
    async with runner_for("Gate", call_timeout=0.05) as runner:
        _, failed = await outcome(runner.submit("stuck"))
        assert isinstance(failed, Failed)
        assert (failed.problem.code, failed.problem.status) == ("CALL_TIMEOUT", 504)
        assert (await outcome(runner.submit("pass")))[0] == ['"pass"']
        assert runner.app.instance.log == [("start", "stuck"), ("start", "pass"), ("end", "pass")]


async def test_sync_call_past_its_timeout_holds_the_next_until_its_thread_is_free() -> None:
    async with runner_for("ThreadGate", call_timeout=0.05) as runner:
        stuck, after = runner.submit("stuck"), runner.submit("pass")
        _, failed = await outcome(stuck)
        assert isinstance(failed, Failed) and failed.problem.code == "CALL_TIMEOUT"
        app = runner.app.instance
        assert app.log == [("start", "stuck")]  # the next call has not started beside it
        app.release.set()
        assert (await outcome(after))[0] == ['"pass"']
        assert app.log == [("start", "stuck"), ("end", "stuck"), ("start", "pass"), ("end", "pass")]


async def test_a_sync_call_that_never_comes_back_ends_the_session_after_the_grace() -> None:
    async with runner_for("ThreadGate", call_timeout=0.05, call_grace=0.1) as runner:
        stuck, after = runner.submit("stuck"), runner.submit("pass")
        _, failed = await outcome(stuck)
        assert isinstance(failed, Failed) and failed.problem.code == "CALL_TIMEOUT"
        ending = await asyncio.wait_for(runner.ending(), 5)
        assert ending.reason is Reason.CALL_TIMEOUT and ending.exit_code == 1
        assert ending.message.startswith("call 1 ran past its 0.05s timeout"), ending.message
        _, rejected = await outcome(after)
        assert isinstance(rejected, Failed) and rejected.problem.code == "SESSION_ENDED"
        assert runner.app.instance.log == [("start", "stuck")], "the waiting call never ran"
        runner.app.instance.release.set()  # let the fixture's shutdown find the thread free


async def test_activity_is_stamped_at_start_and_end_and_in_flight_counts() -> None:
    clock = FakeClock()
    async with runner_for("Gate", clock=clock) as runner:
        ready_at = runner.status().last_activity
        clock.advance(10)
        assert runner.status().idle_seconds == 10
        call = runner.submit("x")
        await until(lambda: runner.status().in_flight, "the call to start")
        started = runner.status().last_activity
        assert (started - ready_at).total_seconds() == 10
        clock.advance(500)  # a long call is not idleness
        assert runner.status().idle_seconds == 0
        runner.app.instance.release.set()
        await outcome(call)
        ended = runner.status().last_activity
        assert (ended - started).total_seconds() == 500
        clock.advance(7)
        assert runner.status().idle_seconds == 7


async def test_a_waiting_call_counts_as_activity() -> None:
    clock = FakeClock()
    async with runner_for("Gate", clock=clock) as runner:
        runner.submit("x")
        clock.advance(100)
        assert runner.status().idle_seconds == 0


async def test_end_session_closes_after_the_call_and_refuses_later_ones() -> None:
    async with runner_for("Ender") as runner:
        outputs, done = await outcome(runner.submit("hello"))
        assert isinstance(done, Done) and not done.session_closed
        outputs, done = await outcome(runner.submit("bye"))
        assert outputs == ['"bye"']
        assert isinstance(done, Done) and done.session_closed
        assert runner.state is State.CLOSING
        assert (await runner.ending()).reason is Reason.CLOSED_BY_APP
        with pytest.raises(Exception, match="SESSION_ENDED"):
            runner.submit("late")
        await runner.shutdown(grace=5)
        assert runner.app.instance.closed


def test_end_session_outside_a_call_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="only be called while run"):
        end_session()


async def test_stop_lets_the_running_call_finish_and_refuses_the_queue() -> None:
    async with runner_for("Gate") as runner:
        running, waiting = await queued_in_order(runner, ["a", "b"])
        await until(lambda: runner.status().in_flight, "the first call to start")
        runner.stop(Reason.TERMINATED, "SIGTERM")
        _, refused = await outcome(waiting)
        assert isinstance(refused, Failed) and refused.problem.code == "SESSION_ENDED"
        runner.app.instance.release.set()
        await runner.shutdown(grace=5)
        outputs, done = await outcome(running)
        assert outputs == ['"a"']
        assert isinstance(done, Done) and done.session_closed
        runner.stop(Reason.CLOSED)  # a later request does not rename the ending
        assert (await runner.ending()).reason is Reason.TERMINATED


async def test_a_call_outliving_the_stop_grace_is_cancelled() -> None:
    async with runner_for("Gate") as runner:
        call = runner.submit("stuck")
        await until(lambda: runner.status().in_flight, "the call to start")
        runner.stop(Reason.TERMINATED)
        await runner.shutdown(grace=0.05)
        _, failed = await outcome(call)
        assert isinstance(failed, Failed) and failed.problem.code == "SESSION_ENDED"


async def test_setup_failure_leaves_setup_failed_and_refuses_calls() -> None:
    async with runner_for("FailingSetup", setup=False) as runner:
        with pytest.raises(RuntimeError, match="no model here"):
            await runner.setup({})
        assert runner.state is State.SETUP_FAILED
        with pytest.raises(Exception, match="NOT_READY"):
            runner.submit(1)


async def test_app_that_cannot_be_imported_fails_setup() -> None:
    from kubesessions_worker.app import AppError, AppHost

    with pytest.raises(AppError, match="no_such_module"):
        await AppHost("no_such_module:App").setup({})
    with pytest.raises(AppError, match="has no attribute 'Nope'"):
        await AppHost("kubesessions_worker.examples.echo:Nope").setup({})


async def test_safety_net_waits_out_a_long_call_then_ends_an_idle_session() -> None:
    from kubesessions_worker.lifecycle import exit_when_forgotten

    clock = FakeClock()
    async with runner_for("Gate", clock=clock) as runner:
        call = runner.submit("long")
        await until(lambda: runner.status().in_flight, "the call to start")
        runner.session_timeout = 0  # the window is the grace alone: the net's real sleeps stay short
        net = asyncio.create_task(exit_when_forgotten(runner, grace=0.02))
        clock.advance(1000)  # far past the window, but a call is running
        done, _ = await asyncio.wait([net], timeout=0.2)
        assert not done, "the safety net must not end a session with a call in flight"
        runner.app.instance.release.set()
        await outcome(call)
        clock.advance(1)
        await asyncio.wait_for(net, 5)
        ending = await runner.ending()
        assert ending.reason is Reason.IDLE_TIMEOUT
        assert "0.02s" in ending.message
