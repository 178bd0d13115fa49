"""The worker image on the process node: Ready through its probe, state kept across calls,
token required, and POST /close ends the pod with the termination message `Closed`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from ..conftest import Cluster, await_pod

pytestmark = pytest.mark.cluster

IMAGE = "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0"
TOKEN = "worker-pod-test-token"


def worker_pod(name: str, secret: str) -> dict[str, Any]:
    env = [
        {"name": "SESSION_ID", "value": name},
        {"name": "SESSION_TIMEOUT", "value": "300"},
        {"name": "KUBESESSIONS_APP", "value": "kubesessions_worker.examples.counter:Counter"},
        {"name": "KUBESESSIONS_CONFIG", "value": json.dumps({"start": 100})},
        {
            "name": "KUBESESSIONS_SESSION_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}},
        },
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "worker",
                    "image": IMAGE,
                    "env": env,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }


def request(
    method: str, url: str, body: dict[str, Any] | None, token: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data, headers, method=method), timeout=10
        ) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_counter_worker_keeps_state_and_closes(kube: Cluster, namespace: str) -> None:
    core = kube.core
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "w-token"}, "stringData": {"token": TOKEN}}
    )
    core.create_namespaced_pod(namespace, worker_pod("w", "w-token"))
    pod = await_pod(kube, namespace, "w", ready, 60, "the worker to be Ready")
    base = f"http://{pod.status.pod_ip}:8080"
    status, body = request("GET", f"{base}/status", None, TOKEN)
    assert (status, body.get("sessionId")) == (200, "w"), (
        f"another process answers on {base}: pod IPs of two local clusters on one machine can collide"
    )
    assert body["state"] == "READY" and body["gpu"]["available"] is False

    totals = [request("POST", f"{base}/run", {"input": {"add": n}}, TOKEN) for n in (1, 2, 3)]
    assert [status for status, _ in totals] == [200, 200, 200]
    assert [body["output"] for _, body in totals] == [
        {"total": 101, "calls": 1},
        {"total": 103, "calls": 2},
        {"total": 106, "calls": 3},
    ]

    status, body = request("POST", f"{base}/run", {"input": {"add": 1}}, None)
    assert (status, body["code"]) == (401, "UNAUTHORIZED")
    status, body = request("POST", f"{base}/run", {"input": {"add": 1}}, "not-the-token")
    assert (status, body["code"]) == (401, "UNAUTHORIZED")

    status, _ = request("POST", f"{base}/close", None, TOKEN)
    assert status == 202
    done = await_pod(
        kube, namespace, "w", lambda p: p.status.phase in ("Succeeded", "Failed"), 30, "the pod to end"
    )
    assert done.status.phase == "Succeeded"
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert json.loads(terminated.message) == {"reason": "Closed", "message": "POST /close", "sessionId": "w"}
