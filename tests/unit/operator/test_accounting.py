"""GPU-seconds and outcomes: what the worker's readings add to the counters and the status."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubesessions.control.accounting import Accounting, gpu_seconds, gpus_held

pytestmark = pytest.mark.unit

KEY = ("team-a", "s1")


def session(gpus: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "s1", "namespace": "team-a", "creationTimestamp": "2030-01-01T00:00:00Z"},
        "spec": {"app": "llm"},
        "status": {"gpus": gpus or {"requested": 2}, **status},
    }


def reading(busy: float, idle: float, starting: float = 1.0) -> dict[str, Any]:
    return {"state": "READY", "heldSeconds": {"starting": starting, "busy": busy, "idle": idle}}


def test_gpu_seconds_are_the_worker_seconds_times_its_gpus() -> None:
    assert gpu_seconds(reading(2, 3, 5), 2) == {
        "held": 20.0,
        "starting": 10.0,
        "busy": 4.0,
        "idle": 6.0,
        "busyPercent": 20,
    }
    zero = {"held": 0.0, "starting": 0.0, "busy": 0.0, "idle": 0.0, "busyPercent": 0}
    assert gpu_seconds(reading(0, 0, 0), 1) == zero


def test_no_gpu_seconds_without_gpus_or_without_a_reading() -> None:
    assert gpu_seconds(reading(2, 3), 0) is None
    assert gpu_seconds({"state": "READY"}, 1) is None  # an older worker
    assert gpu_seconds({"heldSeconds": {"starting": 0, "busy": "2", "idle": 3}}, 1) is None


def test_a_mig_slice_counts_as_one_device() -> None:
    assert gpus_held({"gpus": {"requested": 0, "migProfile": "1g.10gb"}}) == 1
    assert gpus_held({"gpus": {"requested": 4}}) == 4
    assert gpus_held({}) == 0


def test_counters_grow_by_what_is_new_per_app_and_namespace() -> None:
    acc = Accounting()
    acc.observe(KEY, session(), reading(1, 3))
    acc.observe(KEY, session(), reading(2, 3))  # one more busy second, no more idle
    assert acc.gpu_seconds == {
        ("starting", "llm", "team-a"): 2.0,
        ("busy", "llm", "team-a"): 4.0,
        ("idle", "llm", "team-a"): 6.0,
    }
    assert acc.status_fields(KEY) == {
        "gpuSeconds": {"held": 12.0, "starting": 2.0, "busy": 4.0, "idle": 6.0, "busyPercent": 33}
    }
    text = "\n".join(acc.render())
    assert 'kubesessions_gpu_seconds_total{state="busy",app="llm",namespace="team-a"} 4.0' in text
    assert "s1" not in text  # no session names on counters


def test_after_a_restart_counting_starts_from_what_the_status_recorded() -> None:
    acc = Accounting()  # a new operator process: nothing in memory
    recorded = {"held": 10.0, "starting": 2.0, "busy": 2.0, "idle": 6.0, "busyPercent": 20}
    acc.observe(KEY, session(gpuSeconds=recorded), reading(1.5, 3.5))
    assert acc.gpu_seconds == {("busy", "llm", "team-a"): 1.0, ("idle", "llm", "team-a"): 1.0}


def test_a_session_without_gpus_adds_nothing() -> None:
    acc = Accounting()
    acc.observe(KEY, session(gpus={"requested": 0}), reading(2, 3))
    assert acc.gpu_seconds == {}
    assert acc.status_fields(KEY) == {}


def test_endings_are_counted_once_by_phase_and_reason() -> None:
    acc = Accounting()
    body = session()
    acc.transition(body, "Ready", {"phase": "Expired", "reason": "IdleTimeout"})
    acc.transition(body, "Expired", {"phase": "Expired", "reason": "IdleTimeout"})  # not a transition
    acc.transition(body, "Ready", {"phase": "Closed", "reason": "ClosedByUser"})
    assert acc.ended == {("Expired", "IdleTimeout"): 1, ("Closed", "ClosedByUser"): 1}
    assert 'kubesessions_sessions_ended_total{phase="Expired",reason="IdleTimeout"} 1' in acc.render()


def test_time_to_ready_is_observed_from_creation() -> None:
    acc = Accounting()
    acc.transition(session(), "Starting", {"phase": "Ready", "readyAt": "2030-01-01T00:00:02.500Z"})
    text = acc.render()
    assert "kubesessions_session_ready_seconds_count{} 1" in text
    assert 'kubesessions_session_ready_seconds_bucket{le="2.5"} 1' in text
    assert 'kubesessions_session_ready_seconds_bucket{le="1.0"} 0' in text


def test_session_gauges_count_phases_and_age_the_oldest_unready() -> None:
    import datetime

    from kubesessions.control.accounting import session_gauges

    def body(phase: str | None, created: str) -> dict[str, Any]:
        return {"metadata": {"creationTimestamp": created}, "status": {"phase": phase} if phase else {}}

    now = datetime.datetime(2030, 1, 1, 0, 10, tzinfo=datetime.UTC)
    lines = session_gauges(
        [
            body("Starting", "2030-01-01T00:00:00Z"),
            body("Starting", "2030-01-01T00:09:00Z"),
            body(None, "2030-01-01T00:09:30Z"),  # no status yet: Pending
            body("Ready", "2029-12-31T00:00:00Z"),
        ],
        unreachable=1,
        now=now,
    )
    assert 'kubesessions_sessions{phase="Starting"} 2' in lines
    assert 'kubesessions_sessions{phase="Pending"} 1' in lines
    assert 'kubesessions_sessions{phase="Closed"} 0' in lines
    assert 'kubesessions_sessions_oldest_age_seconds{phase="Starting"} 600.0' in lines
    assert 'kubesessions_sessions_oldest_age_seconds{phase="Pending"} 30.0' in lines
    assert "kubesessions_workers_unreachable 1" in lines


def pool_reading(seconds: float) -> dict[str, Any]:
    return {"state": "READY", "heldSeconds": {"starting": 0.0, "busy": 0.0, "idle": 0.0, "pool": seconds}}


def test_pool_time_is_the_apps_counted_once_across_looks_and_the_claim() -> None:
    """Looks at an unclaimed worker count its pool time as it grows; its Session's first reading
    adds the last stretch before the claim, and the Session's own GPU-seconds exclude it all."""
    acc = Accounting(began=time.monotonic() - 3600)
    acc.observe_pool("team-a", "llm", "llm-pool-1", pool_reading(40), gpus=2)  # setup + wait so far
    acc.observe_pool("team-a", "llm", "llm-pool-1", pool_reading(100), gpus=2)
    claimed = {"state": "READY", "heldSeconds": {"starting": 0.0, "busy": 2.0, "idle": 3.0, "pool": 104.0}}
    acc.observe(KEY, session(), claimed, pod="llm-pool-1")
    acc.observe(KEY, session(), claimed, pod="llm-pool-1")  # read again: the pool part is final
    assert acc.pool_gpu_seconds == {("team-a", "llm"): 208.0}
    assert acc.status_fields(KEY)["gpuSeconds"] == {
        "held": 10.0,
        "starting": 0.0,
        "busy": 4.0,
        "idle": 6.0,
        "busyPercent": 40,
    }
    text = "\n".join(acc.render())
    assert 'kubesessions_pool_gpu_seconds_total{namespace="team-a",app="llm"} 208.0' in text
    assert 'kubesessions_gpu_seconds_total{state="pool"' not in text


def test_a_pool_worker_first_read_after_a_restart_counts_only_this_operators_time() -> None:
    acc = Accounting(began=time.monotonic() - 10)  # this operator began 10 s ago
    acc.observe_pool("team-a", "llm", "llm-pool-1", pool_reading(500), gpus=1)
    assert 10 <= acc.pool_gpu_seconds[("team-a", "llm")] < 12
    acc.observe(KEY, session(), reading(1, 1))  # a Session's own worker: no pool time
    assert list(acc.pool_gpu_seconds) == [("team-a", "llm")]
