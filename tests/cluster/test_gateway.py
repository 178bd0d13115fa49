"""The gateway end to end on the local cluster: the reference's flows, ordering, auth, bad requests."""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubesessions.client import Client, RecoveringSession
from kubesessions.gateway.forward import sse_events

from ..conftest import Cluster, OperatorProcess, await_condition, await_session, phase_is
from .conftest import GROUP, GatewayProcess, seconds_between, service_account_token

pytestmark = pytest.mark.cluster


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "caller", allowed=True)


@pytest.fixture
def api(gateway: GatewayProcess, namespace: str, token: str) -> Client:
    return Client(gateway.url, token=token, namespace=namespace, request_timeout=60)


def post(
    gateway: GatewayProcess, namespace: str, token: str | None, body: bytes, path: str = "/v1/run"
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{gateway.url}{path}?namespace={namespace}", data=body, method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        status, kind, raw = err.code, err.headers["Content-Type"], err.read()
    assert kind.startswith("application/problem+json"), kind
    return status, json.loads(raw)


def sessions_in(kube: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(kube.api).list_namespaced_custom_object(
        *GROUP, namespace, "sessions"
    )["items"]
    return items


def test_model_loads_once_then_predictions_are_fast(api: Client) -> None:
    started = time.perf_counter()
    first = api.run({"app": "model", "input": {"seed": 0}, "session": "new", "session_timeout": 600})
    cold = time.perf_counter() - started
    session_id = first["session_id"]
    warm = []
    for seed in range(1, 6):
        started = time.perf_counter()
        result = api.run({"app": "model", "input": {"seed": seed}, "session": session_id})
        warm.append(time.perf_counter() - started)
        assert result["session_id"] == session_id
        assert result["output"]["setupSeconds"] == first["output"]["setupSeconds"], "setup ran again"
        assert result["output"]["residual"] < 1e-6
    assert statistics.median(warm) < cold / 5, f"cold {cold:.3f}s, warm {warm}"


def test_stateful_conversation_keeps_state_on_one_worker(api: Client, kube: Cluster, namespace: str) -> None:
    result = api.run({"app": "counter", "input": {"add": 1}, "session": "new", "session_timeout": 1800})
    session_id = result["session_id"]
    totals = [
        api.run({"app": "counter", "input": {"add": n}, "session": session_id})["output"]["total"]
        for n in (2, 3, 4)
    ]
    assert totals == [3, 6, 10]
    assert [s["metadata"]["name"] for s in sessions_in(kube, namespace)] == [session_id]
    info = api.get_session(session_id)
    assert (info["phase"], info["session_timeout"], info["app"]) == ("Ready", 1800, "counter")


def test_several_processes_share_the_port_and_stop_together(
    kube: Cluster, namespace: str, apps: None, operator: OperatorProcess, tmp_path: Path, token: str
) -> None:
    gateway = GatewayProcess(kube, namespace, tmp_path, "--processes", "2").start()
    proc = gateway.proc
    assert proc is not None
    try:
        first = Client(gateway.url, token=token, namespace=namespace, request_timeout=60)
        session_id = first.run({"app": "counter", "input": {"add": 1}, "session": "new"})["session_id"]
        # A new client is a new connection, which the kernel may hand to either process: each
        # must find the session the other created (its own watch, or one read on a miss).
        totals = []
        for _ in range(6):
            with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as fresh:
                totals.append(fresh.run({"app": "counter", "input": {"add": 1}, "session": session_id}))
        assert [t["output"]["total"] for t in totals] == [2, 3, 4, 5, 6, 7]
    finally:
        gateway.stop()
    assert proc.returncode == 0, "SIGTERM stops every process cleanly"


def test_data_pipeline_loads_once_and_analyses_several_times(api: Client) -> None:
    with api.session("model", session_timeout=900, config={"size": 400}) as session:
        results = [
            session.run({"seed": seed})["output"]
            for seed in ("summary", "correlations", "outliers", "trends").__len__() * [0]
        ]
        setups = {r["setupSeconds"] for r in results}
        assert len(setups) == 1, "the data was loaded more than once"
        session_id = session.id
    assert api.get_session(session_id)["phase"] in ("Ready", "Closed")  # closing is under way or done
    await_condition(lambda: api.get_session(session_id)["phase"] == "Closed", 15, "the session to close")


def test_recovery_pattern_starts_a_new_session_and_replays(
    api: Client, kube: Cluster, namespace: str
) -> None:
    manager = RecoveringSession(api, "counter", session_timeout=1, init={"add": 100})
    assert manager.run({"add": 1})["output"]["total"] == 101
    first = manager.session_id
    assert first is not None
    await_session(kube, namespace, first, phase_is("Expired"), 15, "the idle session to expire")
    result = manager.run({"add": 1})
    assert manager.recoveries == 1 and manager.session_id != first
    assert result["output"]["total"] == 101, "the new session was initialised, then the call replayed"


def test_explicit_close_frees_the_worker(api: Client, kube: Cluster, namespace: str) -> None:
    session_id = api.run({"app": "counter", "input": {}, "session": "new"})["session_id"]
    api.close_session(session_id)
    with pytest.raises(Exception, match="session not found") as err:
        api.run({"app": "counter", "input": {}, "session": session_id})
    assert err.value.code == "SESSION_ENDED" and err.value.status == 410  # type: ignore[attr-defined]
    await_condition(lambda: not kube.core.list_namespaced_pod(namespace).items, 15, "the worker pod to go")


def test_the_app_may_close_its_own_session(api: Client, kube: Cluster, namespace: str) -> None:
    other = api.run({"app": "counter", "input": {}, "session": "new"})["session_id"]
    closing = api.run({"app": "counter", "input": {"action": "cleanup"}, "session": other})
    assert closing["session_closed"] is True
    closed = await_session(kube, namespace, other, phase_is("Closed", "Failed"), 15, "Closed by the app")
    assert closed["status"]["reason"] == "ClosedByApp", closed["status"]


def test_expired_session_is_410_then_404_after_retention(
    gateway: GatewayProcess, token: str, kube: Cluster, namespace: str
) -> None:
    status, body = post(
        gateway,
        namespace,
        token,
        json.dumps({"app": "echo", "input": "hi", "session": "new", "session_timeout": 1}).encode(),
    )
    assert (status, body["output"]) == (200, "hi")
    session_id = body["session_id"]
    await_session(kube, namespace, session_id, phase_is("Expired"), 15, "Expired")
    again = json.dumps({"app": "echo", "input": "hi", "session": session_id}).encode()
    status, problem = post(gateway, namespace, token, again)
    assert (status, problem["code"]) == (410, "SESSION_EXPIRED"), problem
    assert "session not found" in problem["detail"] and "IdleTimeout" in problem["detail"]
    await_condition(
        lambda: not sessions_in(kube, namespace), 20, "the tombstone to be deleted (retention 5 s)"
    )
    status, problem = post(gateway, namespace, token, again)
    assert (status, problem["code"]) == (404, "SESSION_NOT_FOUND"), problem
    assert "session not found" in problem["detail"]


def test_ten_concurrent_calls_run_one_at_a_time_in_arrival_order(
    api: Client, gateway: GatewayProcess, token: str, namespace: str
) -> None:
    session_id = api.run({"app": "slow", "input": {"seconds": 0}, "session": "new"})["session_id"]
    finished: list[tuple[float, float]] = []
    lock = threading.Lock()

    def finish(response: Any) -> None:
        with response:
            events = dict(sse_events(response.read().splitlines()))
        with lock:
            finished.append((time.monotonic(), json.loads(events["output"])["slept"]))

    started = time.monotonic()
    readers = []
    for i in range(10):
        seconds = round(0.2 + i / 1000, 3)  # tells the calls apart in the answers
        body = {"app": "slow", "input": {"seconds": seconds}, "session": session_id, "stream": True}
        request = urllib.request.Request(
            f"{gateway.url}/v1/run?namespace={namespace}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}"},
        )
        # A streamed call's headers come once the worker has queued it: only then does call
        # i+1 start, so the arrival order is known, not made by spacing.
        response = urllib.request.urlopen(request, timeout=60)
        readers.append(threading.Thread(target=finish, args=(response,)))
        readers[-1].start()
    for reader in readers:
        reader.join(60)
    order = [slept for _, slept in sorted(finished)]
    assert order == [round(0.2 + i / 1000, 3) for i in range(10)], f"out of arrival order: {order}"
    ends = sorted(t for t, _ in finished)
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(ends)), "two calls overlapped"
    assert ends[-1] - started >= 2.0


def test_calls_on_different_sessions_run_in_parallel(api: Client) -> None:
    ids = [
        api.run({"app": "slow", "input": {"seconds": 0}, "session": "new"})["session_id"] for _ in range(3)
    ]
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda s: api.run({"app": "slow", "input": {"seconds": 1}, "session": s}), ids))
    assert [o["output"]["slept"] for o in outs] == [1.0] * 3
    assert time.monotonic() - started < 1.8, "sessions did not run in parallel"


def test_streaming_passes_tokens_through_as_they_come(api: Client) -> None:
    stream = api.stream({"app": "stream", "input": {"text": "one two three", "delay": 0.2}, "session": "new"})
    arrivals = []
    for token in stream:
        arrivals.append((time.monotonic(), token))
    assert [t for _, t in arrivals] == ["one", "two", "three"]
    assert arrivals[-1][0] - arrivals[0][0] >= 0.3, "the tokens were buffered, not streamed"
    assert (
        stream.session_id is not None and stream.done is not None and stream.done["session_closed"] is False
    )


def test_one_shot_call_closes_its_session(api: Client, kube: Cluster, namespace: str) -> None:
    result = api.run({"app": "echo", "input": {"x": 1}})
    assert result["output"] == {"x": 1}
    await_session(
        kube, namespace, result["session_id"], phase_is("Closed"), 15, "the one-shot session to close"
    )


def test_auth_needs_a_token_allowed_to_create_sessions(
    gateway: GatewayProcess, token: str, kube: Cluster, namespace: str
) -> None:
    body = json.dumps({"app": "echo", "input": 1}).encode()
    status, problem = post(gateway, namespace, None, body)
    assert (status, problem["code"]) == (401, "UNAUTHORIZED")
    status, problem = post(gateway, namespace, "not-a-token", body)
    assert status == 401
    outsider = service_account_token(kube, namespace, "outsider", allowed=False)
    status, problem = post(gateway, namespace, outsider, body)
    assert (status, problem["code"]) == (403, "FORBIDDEN")
    assert f"system:serviceaccount:{namespace}:outsider may not create" in problem["detail"]
    assert not sessions_in(kube, namespace)
    assert post(gateway, namespace, token, body)[0] == 200


def test_bad_requests_get_clear_4xx_and_create_nothing(
    gateway: GatewayProcess, token: str, kube: Cluster, namespace: str
) -> None:
    cases = [
        (b"{not json", 400, "VALIDATION", "not JSON"),
        (b"[1]", 400, "VALIDATION", "JSON object"),
        (
            json.dumps({"app": "nope", "input": 1, "session": "new"}).encode(),
            404,
            "APP_NOT_FOUND",
            'app "nope" not found',
        ),
        (
            json.dumps({"app": "echo", "input": 1, "session": "new", "session_timeout": 0}).encode(),
            400,
            "VALIDATION",
            "1..3600",
        ),
        (
            json.dumps({"app": "echo", "input": 1, "session": "new", "session_timeout": 3601}).encode(),
            400,
            "VALIDATION",
            "1..3600",
        ),
        (json.dumps({"app": "echo", "session": "new"}).encode(), 400, "VALIDATION", "input"),
        (b'{"app": "echo", "input": "' + b"x" * (9 * 1024 * 1024) + b'"}', 413, "PAYLOAD_TOO_LARGE", "limit"),
    ]
    for body, status, code, text in cases:
        got, problem = post(gateway, namespace, token, body)
        assert (got, problem["code"]) == (status, code), (body[:80], problem)
        assert text in problem["detail"], problem
    assert not sessions_in(kube, namespace)


def test_a_different_app_for_a_session_is_app_mismatch(api: Client) -> None:
    session_id = api.run({"app": "echo", "input": 1, "session": "new"})["session_id"]
    with pytest.raises(Exception, match='runs app "echo", not "counter"') as err:
        api.run({"app": "counter", "input": 1, "session": session_id})
    assert err.value.code == "APP_MISMATCH"  # type: ignore[attr-defined]


def test_health_metrics_and_openapi(gateway: GatewayProcess, api: Client) -> None:
    api.run({"app": "echo", "input": 1})
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'kubesessions_gateway_requests_total{route="POST /v1/run",status="200",code=""}' in text
    assert "kubesessions_gateway_sessions_created_total 1" in text
    with urllib.request.urlopen(f"{gateway.url}/openapi.json", timeout=5) as resp:
        doc = json.loads(resp.read())
    assert set(doc["paths"]) >= {
        "/v1/run",
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/keepalive",
    }
    assert (
        doc["components"]["schemas"]["RunRequest"]["properties"]["session_timeout"]["anyOf"][0]["maximum"]
        == 3600
    )


def compat_run(gateway: GatewayProcess, namespace: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    """``POST /apps/run`` as the inference.sh SDK sends it: a problem, or the task once it has ended."""
    status, answer = post(gateway, namespace, token, json.dumps(body).encode(), "/apps/run")
    if status != 200:
        return status, answer
    task_id = answer["data"]["id"]

    def ended() -> dict[str, Any] | None:
        url = f"{gateway.url}/tasks/{task_id}?namespace={namespace}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            task: dict[str, Any] = json.loads(resp.read())["data"]
        return task if task["status"] in (10, 11, 12) else None  # COMPLETED, FAILED, CANCELLED

    return 200, await_condition(ended, 30, f"task {task_id} to end")


def test_both_surfaces_answer_the_same_problem_for_the_same_fault(
    gateway: GatewayProcess, token: str, kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    def v1(body: dict[str, Any]) -> tuple[int, Any]:
        return post(gateway, namespace, token, json.dumps(body).encode())

    def same(body: dict[str, Any], status: int, code: str) -> None:
        got, problem = v1(body)
        assert (got, problem["code"]) == (status, code), problem
        other = compat_run(gateway, namespace, token, body)
        if other != (got, problem):
            # The same state gives the same answer; the operator's last status write may land
            # between the two calls (a tombstone's message), so /v1/run is asked again after.
            assert other == v1(body), (other, (got, problem))

    def new(app: str) -> str:
        status, body = v1({"app": app, "input": 1, "session": "new"})
        assert status == 200, body
        return str(body["session_id"])

    same({"app": "echo", "input": 1, "session": "s-" + "a" * 24}, 404, "SESSION_NOT_FOUND")
    echo = new("echo")
    same({"app": "counter", "input": 1, "session": echo}, 400, "APP_MISMATCH")
    ended = new("echo")
    request = urllib.request.Request(
        f"{gateway.url}/v1/sessions/{ended}?namespace={namespace}",
        method="DELETE",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 204
    await_session(kube, namespace, ended, phase_is("Closed"), 15, "the closed session's tombstone")
    same({"app": "echo", "input": 1, "session": ended}, 410, "SESSION_ENDED")

    # A worker that is gone while its Session still says Ready: the operator (stopped here) has
    # not noticed yet. The Session ends a moment after the call found the worker unreachable.
    lost = [new("echo"), new("echo")]
    operator.stop()
    for session_id in lost:
        kube.core.delete_namespaced_pod(session_id, namespace, grace_period_seconds=0)
    await_condition(
        lambda: not {p.metadata.name for p in kube.core.list_namespaced_pod(namespace).items} & set(lost),
        15,
        "the worker pods to be gone",
    )
    custom = client.CustomObjectsApi(kube.api)

    def end_later(session_id: str) -> threading.Timer:
        status = {"status": {"phase": "Failed", "reason": "WorkerLost", "message": "the worker pod is gone"}}
        timer = threading.Timer(
            0.5,
            lambda: custom.patch_namespaced_custom_object_status(
                *GROUP, namespace, "sessions", session_id, status
            ),
        )
        timer.start()
        return timer

    end_later(lost[0])
    status, problem = v1({"app": "echo", "input": 1, "session": lost[0]})
    assert (status, problem["code"]) == (410, "SESSION_ENDED"), problem
    assert problem["detail"] == f"session not found: {lost[0]} has ended (WorkerLost: the worker pod is gone)"
    timer = end_later(lost[1])
    status, task = compat_run(gateway, namespace, token, {"app": "echo", "input": 1, "session": lost[1]})
    timer.join()
    assert status == 200 and task["status"] == 11, task  # the run request was taken, its task failed
    assert task["error"] == problem["detail"].replace(lost[0], lost[1])


def test_get_and_keepalive_answer_the_workers_live_deadline(
    api: Client, gateway: GatewayProcess, token: str, namespace: str
) -> None:
    session_id = api.run({"app": "echo", "input": 1, "session": "new", "session_timeout": 300})["session_id"]
    before = api.get_session(session_id)
    time.sleep(1.2)  # deliberate: time has to pass for the deadline to move
    status, kept = post(gateway, namespace, token, b"", f"/v1/sessions/{session_id}/keepalive")
    after = api.get_session(session_id)
    assert status == 200 and kept["expires_at"] == after["expires_at"], (kept, after)
    moved = seconds_between(before["expires_at"], after["expires_at"])
    assert 1.2 <= moved < 2.5, f"expires_at moved by {moved:.3f}s: {before} -> {after}"
    assert seconds_between(before["last_activity"], after["last_activity"]) == moved


def test_run_calls_the_function_named_and_an_unknown_one_is_400_naming_them(
    gateway: GatewayProcess, namespace: str, token: str
) -> None:
    def run(**body: Any) -> tuple[int, dict[str, Any]]:
        return post(gateway, namespace, token, json.dumps({"app": "counter", **body}).encode())

    status, first = run(input={"add": 2}, session="new")
    assert status == 200
    session = first["session_id"]
    assert run(function="peek", input={}, session=session)[1]["output"] == {"total": 2, "calls": 1}
    assert run(function="reset", input={"to": 7}, session=session)[1]["output"]["total"] == 7
    assert run(input={"add": 1}, session=session)[1]["output"] == {"total": 8, "calls": 2}
    status, problem = run(function="navigate", input={}, session=session)
    assert (status, problem["code"]) == (400, "VALIDATION")
    assert "unknown function 'navigate'; this app has: peek, reset, run" in problem["detail"]
    status, problem = run(function="no such", input={}, session=session)
    assert (status, problem["code"]) == (400, "VALIDATION") and "function" in problem["detail"]
