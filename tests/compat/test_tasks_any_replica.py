"""An inference.sh task started through one gateway replica is read, followed and cancelled
through another: no affinity, no shared store (the task id names its session; its worker keeps
the call's outcome, and a one-shot task's closed Session the outcome the closing replica recorded)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inferencesh import Inference, TaskStatus, inference

from kubesessions.gateway import remotetasks

from ..cluster.conftest import GatewayProcess, service_account_token
from ..conftest import Cluster, OperatorProcess

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator(kube: Cluster, namespace: str, crds: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator, with tombstones kept long enough that a one-shot task is read from its Session."""
    op = OperatorProcess(kube, namespace, tmp_path, "--retention", "300").start()
    yield op
    op.stop()


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "sdk", allowed=True)


@pytest.fixture
def other(kube: Cluster, namespace: str, gateway: GatewayProcess, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A second gateway replica beside the ``gateway`` fixture's."""
    log_dir = tmp_path / "other"
    log_dir.mkdir()
    replica = GatewayProcess(kube, namespace, log_dir).start()
    yield replica
    replica.stop()


def sdks(gateway: GatewayProcess, other: GatewayProcess, token: str) -> tuple[Inference, Inference]:
    return inference(api_key=token, base_url=gateway.url), inference(api_key=token, base_url=other.url)


def test_started_on_one_replica_completed_and_streamed_on_another(
    gateway: GatewayProcess, other: GatewayProcess, token: str
) -> None:
    a, b = sdks(gateway, other, token)
    # Round robin over two URLs: the request goes to A, waiting for it to B.
    task: Any = a.run(
        {"app": "counter", "input": {"add": 2}, "session": "new", "session_timeout": 120}, wait=False
    )
    done = b.wait_for_completion(task["id"], timeout=60)
    assert done["output"] == {"total": 2, "calls": 1}
    read = b.get_task(task["id"]).data
    assert (read["status"], read["session_id"], read["output"]) == (
        TaskStatus.COMPLETED,
        task["session_id"],
        {"total": 2, "calls": 1},
    )
    # The same call read again through A: the two replicas agree, and nothing ran twice.
    assert a.get_task(task["id"]).data["output"] == read["output"]
    again: Any = b.run({"app": "counter", "input": {"add": 1}, "session": task["session_id"]})
    assert again["output"] == {"total": 3, "calls": 2}


def test_a_queued_task_cancelled_through_another_replica_never_runs(
    gateway: GatewayProcess, other: GatewayProcess, token: str
) -> None:
    a, b = sdks(gateway, other, token)
    started: Any = a.run({"app": "slow", "input": {"seconds": 0}, "session": "new", "session_timeout": 120})
    session = started["session_id"]
    held: Any = a.run({"app": "slow", "input": {"seconds": 3}, "session": session}, wait=False)
    queued: Any = a.run({"app": "slow", "input": {"seconds": 0}, "session": session}, wait=False)
    b.cancel(queued["id"])
    with pytest.raises(RuntimeError, match="cancelled"):
        b.wait_for_completion(queued["id"], timeout=60)
    assert b.wait_for_completion(held["id"], timeout=60)["output"] == {"slept": 3.0}
    # Both replicas agree, and the cancelled call never ran: the session served two calls.
    assert a.get_task(queued["id"]).data["status"] == TaskStatus.CANCELLED
    assert a.sessions.get(session)["call_count"] == 2


def test_a_one_shot_task_is_read_with_its_outcome_on_every_replica(
    gateway: GatewayProcess, other: GatewayProcess, token: str
) -> None:
    # No session (the SDK's default): the replica that ran the task closed its session and the
    # worker went with it; the Session keeps the outcome, which every replica reads.
    a, b = sdks(gateway, other, token)
    done: Any = a.run({"app": "counter", "input": {"add": 2}})
    assert done["output"] == {"total": 2, "calls": 1}
    for sdk in (b, a):
        read = sdk.get_task(done["id"]).data
        assert (read["status"], read["output"], read["error"]) == (
            TaskStatus.COMPLETED,
            {"total": 2, "calls": 1},
            None,
        )
    assert b.wait_for_completion(done["id"], timeout=60)["output"] == {"total": 2, "calls": 1}


def test_a_failed_one_shot_task_is_read_as_its_failure_on_every_replica(
    gateway: GatewayProcess, other: GatewayProcess, token: str
) -> None:
    a, b = sdks(gateway, other, token)
    task: Any = a.run({"app": "slow", "input": {"seconds": "x"}}, wait=False)
    with pytest.raises(RuntimeError, match="could not convert"):
        b.wait_for_completion(task["id"], timeout=60)
    for sdk in (a, b):
        read = sdk.get_task(task["id"]).data
        assert read["status"] == TaskStatus.FAILED and "could not convert" in read["error"], read


def test_a_one_shot_task_whose_replica_died_before_the_hand_over_ends_on_every_replica(
    gateway: GatewayProcess, other: GatewayProcess, token: str
) -> None:
    # The replica that took the task dies while its new session starts: the call never reaches
    # the worker. Another replica learns that (the session Ready, the call still missing after
    # the hand-over deadline), cancels the call there and ends the task, instead of QUEUED until
    # the session expires.
    a, b = sdks(gateway, other, token)
    task: Any = a.run({"app": "counter", "input": {"add": 1}}, wait=False)
    gateway.stop(signal.SIGKILL)
    with pytest.raises(RuntimeError, match="cancelled"):
        b.wait_for_completion(task["id"], timeout=remotetasks.HANDOVER_DEADLINE + 60)
    read = b.get_task(task["id"]).data
    assert read["status"] == TaskStatus.CANCELLED, read
