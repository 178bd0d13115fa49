from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from kubesessions.api import names
from kubesessions.api.models import Phase, SessionStatus
from kubesessions.control.decide.status import (
    CREATING_SETTLE,
    Verdict,
    creating_settle,
    desired_status,
    judge,
    setup_overdue,
    status_patch,
)

pytestmark = pytest.mark.unit


def pod(
    phase: str = "Pending",
    node: str | None = "local-0",
    conditions: list[dict[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    containers = [{"name": "worker", "state": state}] if state is not None else []
    return {
        "metadata": {"name": "s"},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": containers, **status},
    }


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def terminated(code: int, message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "message": message}}


@pytest.mark.parametrize(
    ("the_pod", "previous", "phase", "reason"),
    [
        (None, None, Phase.PENDING, "Creating"),
        (None, Phase.READY, Phase.FAILED, "WorkerLost"),
        (None, Phase.STARTING, Phase.FAILED, "WorkerLost"),
        (pod(node=None), None, Phase.PENDING, "Creating"),
        (
            pod(
                node=None,
                conditions=[
                    cond(
                        "PodScheduled",
                        "False",
                        "Unschedulable",
                        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                    )
                ],
            ),
            None,
            Phase.PENDING,
            "Unschedulable",
        ),
        (
            pod(state={"waiting": {"reason": "ContainerCreating"}}),
            Phase.PENDING,
            Phase.STARTING,
            "WorkerStarting",
        ),
        (pod("Running", state={"running": {}}), Phase.STARTING, Phase.STARTING, "WorkerStarting"),
        (
            pod("Running", conditions=[cond("Ready", "True")], state={"running": {}}),
            None,
            Phase.READY,
            "WorkerReady",
        ),
        (pod("Running", state={"running": {}}), Phase.READY, Phase.READY, "WorkerNotReady"),
        (
            pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}),
            None,
            Phase.FAILED,
            "ImageError",
        ),
        (
            pod(
                "Failed",
                reason="ErrImagePull",
                message="image x has no local command",
                state={"waiting": {"reason": "ErrImagePull"}},
            ),
            None,
            Phase.FAILED,
            "ImageError",
        ),
        (
            pod(state={"waiting": {"reason": "CreateContainerConfigError", "message": "secret"}}),
            None,
            Phase.STARTING,
            "CreateContainerConfigError",
        ),
        (
            pod("Failed", state=terminated(1, json.dumps({"reason": "SetupFailed", "message": "boom"}))),
            None,
            Phase.FAILED,
            "SetupFailed",
        ),
        (
            pod("Succeeded", state=terminated(0, json.dumps({"reason": "Closed"}))),
            Phase.READY,
            Phase.CLOSED,
            "Closed",
        ),
        (
            pod("Succeeded", state=terminated(0, json.dumps({"reason": "ClosedByApp"}))),
            Phase.READY,
            Phase.CLOSED,
            "ClosedByApp",
        ),
        (
            pod("Succeeded", state=terminated(0, json.dumps({"reason": "IdleTimeout"}))),
            Phase.READY,
            Phase.EXPIRED,
            "IdleTimeout",
        ),
        (
            pod("Failed", state=terminated(1, json.dumps({"reason": "CallTimeout", "message": "call c1"}))),
            Phase.READY,
            Phase.FAILED,
            "CallTimeout",
        ),
        (pod("Failed", state=terminated(137)), Phase.READY, Phase.FAILED, "WorkerLost"),
        (pod("Failed", state=terminated(2, "Traceback: KeyError")), Phase.READY, Phase.FAILED, "WorkerLost"),
    ],
)
def test_judge(the_pod: dict[str, Any] | None, previous: str | None, phase: Phase, reason: str) -> None:
    verdict = judge(the_pod, previous)
    assert (verdict.phase, verdict.reason) == (phase, reason)


def test_messages_carry_the_why() -> None:
    unschedulable = pod(
        node=None,
        conditions=[cond("PodScheduled", "False", "Unschedulable", "1 Insufficient nvidia.com/gpu")],
    )
    assert "nvidia.com/gpu" in judge(unschedulable, None).message
    setup = pod("Failed", state=terminated(1, json.dumps({"reason": "SetupFailed", "message": "no weights"})))
    assert judge(setup, None).message == "no weights"
    wedged = json.dumps({"reason": "CallTimeout", "message": "call c1 did not return within 30s + 5s"})
    assert judge(pod("Failed", state=terminated(1, wedged)), Phase.READY).message == (
        "call c1 did not return within 30s + 5s"
    )
    crashed = pod("Failed", state=terminated(2, "Traceback: KeyError"))
    assert judge(crashed, Phase.READY).message == "the worker exited with code 2: Traceback: KeyError"


def test_status_keeps_transition_times_and_accruing_fields() -> None:
    ready = Verdict(Phase.READY, "WorkerReady", "ok", ready=True)
    t1, t2 = "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z"
    running = pod("Running", podIP="127.0.0.5", startTime="t0")
    facts = SessionStatus(sessionTimeout=60)
    first = desired_status(SessionStatus(), ready, pod=running, generation=1, now=t1, facts=facts)
    assert first.readyAt == first.lastActivityTime == t1
    assert first.expiresAt == "2026-01-01T00:01:01.000Z"
    assert first.podIP == "127.0.0.5" and first.startedAt == "t0"
    again = desired_status(first, ready, pod=running, generation=1, now=t2)
    assert again.readyAt == t1
    assert [c.lastTransitionTime for c in again.conditions] == [t1, t1]
    assert status_patch(first, again) == {}


def test_finished_status_records_end_once() -> None:
    verdict = Verdict(Phase.EXPIRED, "IdleTimeout", "idle")
    ended = desired_status(SessionStatus(phase=Phase.READY), verdict, pod=None, generation=3, now="T9")
    assert (ended.phase, ended.reason, ended.endedAt) == ("Expired", "IdleTimeout", "T9")
    assert all(c.observedGeneration == 3 for c in ended.conditions)
    assert desired_status(ended, verdict, pod=None, generation=3, now="T10").endedAt == "T9"


def test_an_ended_session_stops_its_clocks() -> None:
    ready = Verdict(Phase.READY, "WorkerReady", "ok", ready=True)
    t1 = "2026-01-01T00:00:01.000Z"
    live = desired_status(SessionStatus(sessionTimeout=60), ready, pod=None, generation=1, now=t1)
    assert live.idleSince == live.lastActivityTime == t1
    closed = Verdict(Phase.CLOSED, "ClosedByUser", "done")
    t2 = "2026-01-01T00:00:05.000Z"
    ended = desired_status(live, closed, pod=None, generation=1, now=t2)
    assert ended.endedAt == t2
    assert ended.expiresAt == t2  # was 00:01:01, after the end
    assert ended.idleSince is None and ended.lastActivityTime == t1
    patch = status_patch(live, ended)
    assert patch["idleSince"] is None  # a merge patch removes it
    # An idle session that expired already ended at its deadline or after: kept as it was.
    expired = desired_status(
        live,
        Verdict(Phase.EXPIRED, "IdleTimeout", "idle"),
        pod=None,
        generation=1,
        now="2026-01-01T00:01:02.000Z",
    )
    assert expired.expiresAt == "2026-01-01T00:01:01.000Z"


def test_status_patch_is_only_the_difference() -> None:
    assert status_patch(
        SessionStatus(calls=1, reason="a"), SessionStatus(calls=1, reason="b", podName="p")
    ) == {
        "reason": "b",
        "podName": "p",
    }


def test_pod_facts_alone_wait_for_the_next_change_of_phase() -> None:
    starting = SessionStatus(phase=Phase.STARTING, reason="WorkerStarting")
    with_pod = starting.model_copy(update={"podIP": "127.1.0.5", "startedAt": "T1"})
    assert status_patch(starting, with_pod) == {}
    ready = starting.model_copy(update={"phase": Phase.READY, "reason": "WorkerReady", "podIP": "127.1.0.5"})
    assert status_patch(starting, ready) == {"phase": "Ready", "reason": "WorkerReady", "podIP": "127.1.0.5"}


def test_a_new_pod_waiting_for_the_scheduler_holds_back_the_first_status_only() -> None:
    creating = Verdict(Phase.PENDING, "Creating", "creating the worker pod")
    assert creating_settle(creating, None, pod_age=0.25) == CREATING_SETTLE - 0.25
    assert creating_settle(creating, None, pod_age=CREATING_SETTLE + 1) == 0.0  # it waits long: say so
    assert creating_settle(creating, None, pod_age=None) == 0.0  # not created just now by us
    assert creating_settle(creating, "Pending", pod_age=0.1) == 0.0  # not the first
    unschedulable = Verdict(Phase.PENDING, "Unschedulable", "0/1 nodes: insufficient nvidia.com/gpu")
    assert creating_settle(unschedulable, None, pod_age=0.1) == 0.0  # problems show at once


def limited(the_pod: dict[str, Any], memory: str | None) -> dict[str, Any]:
    limits = {"limits": {"memory": memory}} if memory else {}
    the_pod["spec"]["containers"] = [{"name": "worker", "resources": limits}]
    return the_pod


def test_an_oom_kill_says_out_of_memory_with_the_limit() -> None:
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "loading 3 GB"}}
    verdict = judge(limited(pod("Failed", state=oom), "512Mi"), Phase.READY)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "OutOfMemory")
    assert "memory limit of 512Mi" in verdict.message
    assert "OOMKilled" in verdict.message and "resources.memory" in verdict.message
    unlimited = judge(limited(pod("Failed", state=oom), None), Phase.READY)
    assert unlimited.reason == "OutOfMemory" and "more memory than its node had left" in unlimited.message


def test_a_worker_killed_mid_session_says_how_with_its_last_log_lines() -> None:
    # FallbackToLogsOnError: the kubelet's copy of the last log lines is the message.
    log = "\n".join(f"line {i}" for i in range(40)) + "\nchromium: Aw, Snap!\n"
    killed = {"terminated": {"exitCode": 137, "reason": "Error", "message": log}}
    verdict = judge(pod("Failed", state=killed), Phase.READY)
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "WorkerLost")
    assert verdict.message.startswith("the worker exited with code 137 (killed by signal 9, SIGKILL): ")
    assert verdict.message.endswith("line 39\nchromium: Aw, Snap!")
    assert "line 29" not in verdict.message  # the last ten lines only
    signalled = {"terminated": {"exitCode": 0, "signal": 11, "reason": "StartError"}}
    assert judge(pod("Failed", state=signalled), Phase.READY).message == (
        "the worker exited with code 0 (killed by signal 11), reason StartError"
    )


def test_an_eviction_says_why() -> None:
    said = 'Usage of EmptyDir volume "scratch" exceeds the limit "1Gi".'
    evicted = pod("Failed", state=terminated(137), reason="Evicted", message=said)
    assert judge(evicted, Phase.READY) == Verdict(Phase.FAILED, "Evicted", said)


def running_since(started: str, timeout: str | None) -> dict[str, Any]:
    the_pod = pod("Running", state={"running": {"startedAt": started}})
    if timeout is not None:
        the_pod["metadata"]["annotations"] = {names.SETUP_TIMEOUT_ANNOTATION: timeout}
    return the_pod


def test_a_setup_that_outlasts_its_timeout_fails_the_session_naming_setup() -> None:
    now = datetime.datetime(2026, 1, 1, 0, 10, tzinfo=datetime.UTC)
    slow = running_since("2026-01-01T00:00:00Z", "300")
    verdict = judge(slow, Phase.STARTING)
    overdue, left = setup_overdue(slow, verdict, now)
    assert left is None and overdue is not None
    assert (overdue.phase, overdue.reason) == (Phase.FAILED, "SetupTimeout")
    assert "300s" in overdue.message and "setup" in overdue.message and "setupTimeout" in overdue.message
    # The default (600 s) when the pod carries none; the operator looks again when it is due.
    assert setup_overdue(running_since("2026-01-01T00:05:00Z", None), verdict, now) == (None, 300.0)
    # A worker not yet started (image pull, scheduling) or already ready runs no setup clock.
    assert setup_overdue(pod("Pending", state={"waiting": {}}), verdict, now) == (None, None)
    ready = Verdict(Phase.READY, "WorkerReady", "", ready=True)
    assert setup_overdue(slow, ready, now) == (None, None)
