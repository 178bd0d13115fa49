from __future__ import annotations

import pytest

from kubesessions.localcluster.podstatus import ContainerRecord, pod_phase, pod_status

pytestmark = pytest.mark.unit


def rec(state: str = "waiting", exit_code: int = 0, **kw: object) -> ContainerRecord:
    r = ContainerRecord(name="c", image="i", state=state, exit_code=exit_code)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


@pytest.mark.parametrize(
    ("policy", "mains", "phase"),
    [
        ("Never", [rec()], "Pending"),
        ("Never", [rec("running")], "Running"),
        ("Never", [rec("terminated", 0)], "Succeeded"),
        ("Never", [rec("terminated", 1)], "Failed"),
        ("Never", [rec("terminated", 1), rec("running")], "Running"),
        ("OnFailure", [rec("terminated", 1)], "Running"),
        ("OnFailure", [rec("terminated", 0)], "Succeeded"),
        ("Always", [rec("terminated", 0)], "Running"),
        ("Always", [rec("waiting", restart_count=2)], "Running"),
    ],
)
def test_phase_follows_restart_policy(policy: str, mains: list[ContainerRecord], phase: str) -> None:
    assert pod_phase(policy, [], mains) == phase


def test_init_containers_gate_the_phase() -> None:
    assert pod_phase("Always", [rec("running")], [rec()]) == "Pending"
    assert pod_phase("Never", [rec("terminated", 2)], [rec()]) == "Failed"
    assert pod_phase("OnFailure", [rec("terminated", 2)], [rec()]) == "Pending"


def test_status_ready_only_when_every_container_is_ready() -> None:
    pod = {"spec": {"restartPolicy": "Never"}, "status": {}}
    kw = {"pod_ip": "127.0.0.5", "host_ip": "127.0.0.1", "start_time": "2026-01-01T00:00:00Z"}
    not_ready = pod_status(pod, [], [rec("running", ready=True), rec("running")], **kw)
    conds = {c["type"]: c["status"] for c in not_ready["conditions"]}
    assert conds["Ready"] == "False"
    assert conds["ContainersReady"] == "False"
    ready = pod_status(pod, [], [rec("running", ready=True)], **kw)
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"
    assert ready["podIP"] == "127.0.0.5"
    assert ready["phase"] == "Running"


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    kw = {"pod_ip": "127.0.0.5", "host_ip": "127.0.0.1", "start_time": "t"}
    old = {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}
    pod = {"spec": {}, "status": {"conditions": [old]}}
    status = pod_status(pod, [], [rec("running", ready=True)], **kw)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_failure_fails_the_pod_with_reason() -> None:
    pod = {"spec": {}, "status": {}}
    status = pod_status(
        pod,
        [],
        [rec()],
        pod_ip="",
        host_ip="127.0.0.1",
        start_time="t",
        failure=("ErrImagePull", "no such image"),
    )
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "ErrImagePull",
        "no such image",
    )


def test_terminated_container_status_carries_exit_details() -> None:
    r = rec("terminated", 137, reason="Error", signal=9, pid=42, message="killed")
    state = r.to_status()["state"]["terminated"]
    assert state["exitCode"] == 137
    assert state["signal"] == 9
    assert state["containerID"] == "process://42"
    assert state["message"] == "killed"
