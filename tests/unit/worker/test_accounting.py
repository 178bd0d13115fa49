"""GPU-seconds held, starting, busy and idle: the worker's split of its uptime, on a clock the test moves."""

from __future__ import annotations

import pytest

from kubesessions_worker import metrics
from kubesessions_worker.claim import Slot
from kubesessions_worker.gpu import Snapshot

from .harness import AUTH, FakeClock, until, worker

pytestmark = pytest.mark.unit


async def test_busy_two_seconds_then_idle_three_reports_two_busy_and_three_idle() -> None:
    clock = FakeClock()
    async with worker("Gate", clock=clock) as w:
        call = w.runner.submit("x")
        await until(lambda: w.runner.status().in_flight, "the call to start")
        clock.advance(2)
        assert w.runner.status().held.busy == 2  # counted while the call is still running
        w.app.release.set()
        await until(lambda: not w.runner.status().in_flight, "the call to end")
        assert call.events  # the call finished with its output recorded
        clock.advance(3)
        async with w.client.get("/status", headers=AUTH) as resp:
            body = await resp.json()
        text = metrics.render(w.runner.stats, w.runner.status(), Snapshot(False, "no NVML here"))
    assert body["heldSeconds"] == {"starting": 0.0, "busy": 2.0, "idle": 3.0, "pool": 0.0}
    assert body["uptimeSeconds"] == 5.0
    assert 'kubesessions_worker_held_seconds_total{state="busy"} 2.0' in text
    assert 'kubesessions_worker_held_seconds_total{state="idle"} 3.0' in text
    assert "kubesessions_worker_gpu_seconds_total" not in text  # no devices listed, no per-GPU series


async def test_setup_time_counts_as_starting_and_calls_add_up() -> None:
    clock = FakeClock()
    async with worker("Gate", clock=clock, setup=False) as w:
        clock.advance(4)  # loading the model: held, no call
        await w.runner.setup({})
        for seconds in (1.5, 0.5):
            w.app.release.clear()
            w.runner.submit("x")
            await until(lambda: w.runner.status().in_flight, "a call to start")
            clock.advance(seconds)
            w.app.release.set()
            await until(lambda: not w.runner.status().in_flight, "the call to end")
    clock.advance(1)
    status = w.runner.status()
    assert (status.held.starting, status.held.busy, status.held.idle) == (4.0, 2.0, 1.0)
    assert status.uptime_seconds == 7.0


async def test_a_claimed_pool_worker_bills_its_session_from_the_claim() -> None:
    """Its setup and its wait in the pool are the App's pool time, not the session's: the
    session's GPU-seconds, calls and idle clock all start at the claim."""
    clock = FakeClock()
    async with worker("Gate", clock=clock, slot=Slot(pooled=True), setup=False) as w:
        clock.advance(4)  # the pool worker's setup
        await w.runner.setup({})
        clock.advance(100)  # waiting in the pool
        assert w.runner.status().held.items() == (
            ("starting", 0.0),
            ("busy", 0.0),
            ("idle", 0.0),
            ("pool", 104.0),
        )
        claim = {"session": "s-1", "token": "session-token-0123456789", "sessionTimeout": 30}
        async with w.client.post("/claim", json=claim, headers=AUTH) as resp:
            assert resp.status == 200
        session_auth = {"Authorization": f"Bearer {claim['token']}"}
        w.runner.submit("x")
        await until(lambda: w.runner.status().in_flight, "the call to start")
        clock.advance(2)
        w.app.release.set()
        await until(lambda: not w.runner.status().in_flight, "the call to end")
        clock.advance(3)
        async with w.client.get("/status", headers=session_auth) as resp:
            body = await resp.json()
    assert body["heldSeconds"] == {"starting": 0.0, "busy": 2.0, "idle": 3.0, "pool": 104.0}
    assert (body["calls"], body["idleSeconds"]) == (1, 3.0)
    assert body["lastActivity"] == "2030-01-01T00:01:46.000Z"  # the call's end: claimed at 104 s, 2 s busy
