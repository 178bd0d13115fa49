"""Exactly-once calls through the real gateway and worker: a call sent again with its
Idempotency-Key (a client retrying after a lost answer) never runs twice, and a retried
``session: "new"`` call finds the session its first try started."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from ..conftest import Cluster
from .conftest import GROUP, GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "caller", allowed=True)


def post(gateway: GatewayProcess, namespace: str, token: str, body: dict[str, Any], key: str) -> Any:
    request = urllib.request.Request(f"{gateway.url}/v1/run", data=json.dumps(body).encode(), method="POST")
    for name, value in {
        "Authorization": f"Bearer {token}",
        "X-Kubesessions-Namespace": namespace,
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }.items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=90) as resp:
        raw = resp.read().decode()
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


def test_a_repeated_one_shot_call_does_not_run_again(
    gateway: GatewayProcess, kube: Cluster, namespace: str, token: str
) -> None:
    # A one-shot call's session is closed once it answered: a retry of it (its answer lost)
    # learns that, rather than starting a second session and running the call there.
    once = {"app": "counter", "input": {"add": 1}}
    first = post(gateway, namespace, token, once, "once-1")
    assert first["output"]["total"] == 1
    with pytest.raises(urllib.error.HTTPError) as err:
        post(gateway, namespace, token, once, "once-1")
    assert err.value.code == 410
    problem = json.loads(err.value.read())
    assert problem["code"] == "SESSION_ENDED" and "one-shot call done" in problem["detail"], problem
    assert sessions_of(kube, namespace) == [first["session_id"]]
