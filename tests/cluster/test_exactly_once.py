"""Exactly-once calls through the real gateway and worker: a call sent again with its
Idempotency-Key (a client retrying after a lost answer) never runs twice, and a retried
``session: "new"`` call finds the session its first try started."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from ..conftest import Cluster, OperatorProcess
from .conftest import GROUP, GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator(kube: Cluster, namespace: str, crds: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator, with tombstones kept long enough that a retry always finds its session's."""
    op = OperatorProcess(kube, namespace, tmp_path, "--retention", "300").start()
    yield op
    op.stop()


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "caller", allowed=True)


def _send(
    gateway: GatewayProcess, route: str, namespace: str, token: str, body: dict[str, Any], key: str
) -> str:
    """A POST to ``route`` as the caller, with its Idempotency-Key; the reply's text."""
    request = urllib.request.Request(f"{gateway.url}{route}", data=json.dumps(body).encode(), method="POST")
    for name, value in {
        "Authorization": f"Bearer {token}",
        "X-Kubesessions-Namespace": namespace,
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }.items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=90) as resp:
        return str(resp.read().decode())


def post(gateway: GatewayProcess, namespace: str, token: str, body: dict[str, Any], key: str) -> Any:
    raw = _send(gateway, "/v1/run", namespace, token, body, key)
    if body.get("stream"):
        return [json.loads(line[5:]) for line in raw.splitlines() if line.startswith("data:")]
    return json.loads(raw)


def sessions_of(kube: Cluster, namespace: str) -> list[str]:
    items = client.CustomObjectsApi(kube.api).list_namespaced_custom_object(*GROUP, namespace, "sessions")
    return [item["metadata"]["name"] for item in items["items"]]


def test_a_repeated_call_id_runs_once_and_a_new_session_is_started_once(
    gateway: GatewayProcess, kube: Cluster, namespace: str, token: str
) -> None:
    start = {"app": "counter", "input": {"add": 1}, "session": "new"}
    first = post(gateway, namespace, token, start, "start-1")
    again = post(gateway, namespace, token, start, "start-1")
    sid = first["session_id"]
    assert again == first, "the retry of the first call got the recorded answer"
    assert sessions_of(kube, namespace) == [sid], "the retry found the session, it did not start another"

    add = {"app": "counter", "input": {"add": 10}, "session": sid}
    assert post(gateway, namespace, token, add, "add-1")["output"]["total"] == 11
    assert post(gateway, namespace, token, add, "add-1")["output"]["total"] == 11, "not run again"
    streamed = {**add, "stream": True}
    events = post(gateway, namespace, token, streamed, "add-2")
    assert post(gateway, namespace, token, streamed, "add-2")[1:] == events[1:], "the recorded events"
    assert post(gateway, namespace, token, add, "add-3")["output"] == {"total": 31, "calls": 4}, (
        "four calls ran: one per call id"
    )


def test_a_new_session_named_by_another_caller_key_is_another_session(
    gateway: GatewayProcess, kube: Cluster, namespace: str, token: str
) -> None:
    start = {"app": "counter", "input": {}, "session": "new"}
    one = post(gateway, namespace, token, start, "k-1")["session_id"]
    two = post(gateway, namespace, token, start, "k-2")["session_id"]
    assert one != two
    assert sorted(sessions_of(kube, namespace)) == sorted([one, two])


def test_a_repeated_one_shot_call_gets_its_result_and_does_not_run_again(
    gateway: GatewayProcess, kube: Cluster, namespace: str, token: str
) -> None:
    # A one-shot call's session is closed once it answered, its worker gone: its Session
    # keeps the outcome, so a retry (its answer lost) gets it, without a second session or run.
    once = {"app": "counter", "input": {"add": 1}}
    first = post(gateway, namespace, token, once, "once-1")
    assert first["output"] == {"total": 1, "calls": 1}
    again = post(gateway, namespace, token, once, "once-1")
    assert (again["session_id"], again["output"]) == (first["session_id"], first["output"])
    streamed = post(gateway, namespace, token, {**once, "stream": True}, "once-1")
    assert streamed[0] == {"session_id": first["session_id"]} and streamed[1] == first["output"]
    failed = {"app": "slow", "input": {"seconds": "x"}}
    with pytest.raises(urllib.error.HTTPError) as err:
        post(gateway, namespace, token, failed, "once-2")
    with pytest.raises(urllib.error.HTTPError) as again_err:
        post(gateway, namespace, token, failed, "once-2")
    assert again_err.value.code == err.value.code == 500
    assert json.loads(again_err.value.read())["code"] == json.loads(err.value.read())["code"] == "RUN_FAILED"
    assert len(sessions_of(kube, namespace)) == 2, "one session per call id, however often sent"


def test_a_one_shot_output_too_large_to_keep_is_refused_not_run_again(
    kube: Cluster, namespace: str, token: str, apps: None, operator: OperatorProcess, tmp_path: Path
) -> None:
    small = GatewayProcess(kube, namespace, tmp_path, "--one-shot-outcome-bytes", "64").start()
    try:
        once = {"app": "echo", "input": "x" * 100}
        assert post(small, namespace, token, once, "big-1")["output"] == "x" * 100
        with pytest.raises(urllib.error.HTTPError) as err:
            post(small, namespace, token, once, "big-1")
        problem = json.loads(err.value.read())
        assert (err.value.code, problem["code"]) == (409, "CALL_ALREADY_RAN"), problem
        assert "64 bytes" in problem["detail"], problem
        assert len(sessions_of(kube, namespace)) == 1
    finally:
        small.stop()


def run_task(gateway: GatewayProcess, namespace: str, token: str, body: dict[str, Any], key: str) -> Any:
    """``POST /apps/run`` (the inference.sh route) with an Idempotency-Key."""
    return json.loads(_send(gateway, "/apps/run", namespace, token, body, key))["data"]


def test_a_task_started_again_with_its_key_is_the_same_task(
    gateway: GatewayProcess, kube: Cluster, namespace: str, token: str
) -> None:
    session = post(gateway, namespace, token, {"app": "counter", "input": {}, "session": "new"}, "s-1")
    on_session = {"app": "counter", "input": {"add": 10}, "session": session["session_id"]}
    first, again = (run_task(gateway, namespace, token, on_session, "task-1") for _ in range(2))
    assert first["id"] == again["id"]
    one_shot = {"app": "counter", "input": {"add": 1}}
    once, twice = (run_task(gateway, namespace, token, one_shot, "task-2") for _ in range(2))
    assert once["id"] == twice["id"] and once["session_id"] == twice["session_id"]
    peek = {"app": "counter", "input": {}, "session": session["session_id"], "function": "peek"}
    assert post(gateway, namespace, token, peek, "peek-1")["output"] == {"total": 11, "calls": 2}, (
        "the keyed task ran once on the session"
    )
    assert len(sessions_of(kube, namespace)) == 2, "and the one-shot task started one session"
