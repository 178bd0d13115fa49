"""Warm pools on the local cluster: claims, cold fallback, refill, scale, App deletion, races."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubesessions.api.names import POOL_LABEL
from kubesessions.control.decide import pool
from kubesessions.control.decide.children import SessionRef

from ..conftest import Cluster, OperatorProcess, await_condition, await_session, phase_is
from .test_operator import GROUP, call, create_app, create_session, custom, token_of

pytestmark = pytest.mark.cluster
POOL_SELECTOR = pool.selector("counter")


def warm_pool(kube: Cluster, namespace: str) -> dict[str, Any]:
    app = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "apps", "counter")
    return (app.get("status") or {}).get("warmPool") or {}


def pool_pods(kube: Cluster, namespace: str) -> list[Any]:
    items = kube.core.list_namespaced_pod(namespace, label_selector=POOL_SELECTOR).items
    return [p for p in items if not p.metadata.deletion_timestamp]


def await_ready_pool(kube: Cluster, namespace: str, size: int, timeout: float = 60) -> None:
    def ready(pod: Any) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    def full() -> bool:
        pods = pool_pods(kube, namespace)
        return warm_pool(kube, namespace).get("ready") == size and len(pods) == size and all(map(ready, pods))

    await_condition(
        full,
        timeout,
        f"the warm pool to have {size} ready workers (status.warmPool and pods)",
        every=0.2,
    )


def scale(kube: Cluster, namespace: str, replicas: int) -> str:
    args = ["-n", namespace, "scale", "app/counter", "--replicas", str(replicas)]
    command = [str(kube.kubectl), "--kubeconfig", str(kube.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def session_pods(kube: Cluster, namespace: str, session: str) -> list[Any]:
    selector = f"kubesessions.io/session={session}"
    return [
        p
        for p in kube.core.list_namespaced_pod(namespace, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def test_sessions_claim_distinct_warm_workers_then_start_cold_and_the_pool_refills(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace, warmPool={"size": 2})
    await_ready_pool(kube, namespace, 2)
    warm = {p.metadata.name for p in pool_pods(kube, namespace)}
    sessions = [f"s{i}" for i in range(10)]
    for name in sessions:  # one after another, as fast as the API takes them
        create_session(kube, namespace, name, app="counter", sessionTimeout=300)
    ready = {n: await_session(kube, namespace, n, phase_is("Ready"), 90, "Ready")["status"] for n in sessions}
    pods = [s["podName"] for s in ready.values()]
    assert len(set(pods)) == 10, f"every session its own worker: {pods}"
    pooled = [n for n, s in ready.items() if s["startedFrom"] == "pool"]
    assert len(pooled) >= 2 and ready["s0"]["startedFrom"] == "pool", ready
    assert {s["startedFrom"] for s in ready.values()} == {"pool", "cold"}, (
        "ten on a pool of 2: some start cold"
    )
    assert {ready[n]["podName"] for n in pooled[:2]} <= warm | {ready[n]["podName"] for n in pooled}
    for name in sessions:
        status = ready[name]
        kids = session_pods(kube, namespace, name)
        assert [p.metadata.name for p in kids] == [status["podName"]], f"{name}: exactly one worker"
        owner = kids[0].metadata.owner_references
        assert [(o.kind, o.name) for o in owner] == [("Session", name)]
        if status["startedFrom"] == "pool":
            assert status["claimedAt"] and status["readyAt"] >= status["claimedAt"]
            assert POOL_LABEL not in (kids[0].metadata.labels or {})
        else:
            assert "claimedAt" not in status and status["podName"] == name
    # A claimed worker is the session's: its token, its state; the pool's token is refused.
    first = ready[pooled[0]]
    token = token_of(kube, namespace, pooled[0])
    totals = [call(first["podIP"], token, {"input": {"add": n}})[1]["output"]["total"] for n in (1, 2)]
    assert totals == [1, 3]
    pool_token = kube.core.read_namespaced_secret("counter-pool-token", namespace)
    assert pool_token.metadata.owner_references[0].kind == "App"
    assert call(first["podIP"], _decode(pool_token.data["token"]), {"input": {"add": 1}})[0] == 401
    # The pool refills; the cold starts told the App.
    await_ready_pool(kube, namespace, 2)
    status = warm_pool(kube, namespace)
    assert status["claimed"] >= len(pooled) and status["size"] == 2
    events = kube.core.list_namespaced_event(namespace, field_selector="involvedObject.kind=App").items
    assert any(e.reason == "PoolExhausted" and e.type == "Warning" for e in events)
    # kubectl scale drives the pool size.
    assert "scaled" in scale(kube, namespace, 3)
    await_ready_pool(kube, namespace, 3)
    # Deleting the App ends its pool but not the sessions running on workers it started.
    custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "apps", "counter")
    await_condition(lambda: not pool_pods(kube, namespace), 60, "the pool workers to go with their App")
    assert call(first["podIP"], token, {"input": {"add": 4}})[1]["output"]["total"] == 7
    for name in pooled:
        assert session_pods(kube, namespace, name), f"{name} keeps its worker"


def test_a_stale_claim_is_refused_by_the_api_server(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """What the claim's safety rests on: two claims made from the same view of a worker, by
    any two operators, cannot both succeed."""
    create_app(kube, namespace, warmPool={"size": 1})
    await_ready_pool(kube, namespace, 1)
    pod = kube.api.sanitize_for_serialization(pool_pods(kube, namespace)[0])
    seen = pool.member(pod)
    now = "2030-01-01T00:00:00.000Z"
    merge = {"_content_type": "application/merge-patch+json"}  # as the operator sends it
    patch = pool.claim_patch(seen, _ref("x1", "uid-x1", namespace), now)
    kube.core.patch_namespaced_pod(seen.name, namespace, patch, **merge)
    with pytest.raises(ApiException) as refused:
        kube.core.patch_namespaced_pod(
            seen.name, namespace, pool.claim_patch(seen, _ref("x2", "uid-x2", namespace), now), **merge
        )
    assert refused.value.status == 409
    labels = kube.core.read_namespaced_pod(seen.name, namespace).metadata.labels
    assert labels["kubesessions.io/session"] == "x1"


def test_sessions_created_at_the_same_instant_never_share_a_worker(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    """Pairs of Sessions created at once race for the one worker of a pool of 1, some while the
    operator is killed and restarted mid-claim: never a shared worker, never a second one for a
    Session, never two claims of the one worker. 50 rounds (under 2 minutes here; fewer with
    KUBESESSIONS_POOL_RACE_ROUNDS)."""
    rounds = int(os.environ.get("KUBESESSIONS_POOL_RACE_ROUNDS", "50"))
    op = OperatorProcess(kube, namespace, tmp_path, "--retention", "1").start()
    started = time.monotonic()
    try:
        create_app(kube, namespace, warmPool={"size": 1})
        starts: list[str] = []
        for r in range(rounds):
            await_ready_pool(kube, namespace, 1)
            names = [f"r{r}a", f"r{r}b"]
            gate = threading.Barrier(2)

            def make(name: str, gate: threading.Barrier) -> None:
                gate.wait()
                create_session(kube, namespace, name, app="counter")

            threads = [threading.Thread(target=make, args=(n, gate)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            killed = r % 10 == 5
            if killed:  # mid-claim: the operator dies just after both Sessions appear
                op.stop(signal.SIGKILL)
                op.start()
            ready = [
                await_session(kube, namespace, n, phase_is("Ready"), 60, f"round {r}: Ready") for n in names
            ]
            workers = [s["status"]["podName"] for s in ready]
            assert workers[0] != workers[1], f"round {r}: both sessions got worker {workers[0]}"
            for name, worker in zip(names, workers, strict=True):
                assert [p.metadata.name for p in session_pods(kube, namespace, name)] == [worker], (
                    f"round {r}: {name} holds exactly its one worker"
                )
            from_pool = [s["status"]["startedFrom"] for s in ready].count("pool")
            # With the operator killed, the pool's replacement may be ready before the restarted
            # operator gets to the second Session: two claims, of two workers.
            assert from_pool <= 1 or killed, f"round {r}: two sessions started from a pool of one"
            starts += [s["status"]["startedFrom"] for s in ready]
            for name in names:
                custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "sessions", name)
        # A ready worker waited for each pair: one of the two should have claimed it.
        assert starts.count("pool") >= 0.8 * rounds, f"pool starts: {starts.count('pool')} in {rounds} rounds"
        print(
            f"{rounds} rounds in {time.monotonic() - started:.0f}s; pool starts {starts.count('pool')}/{len(starts)}"
        )
    finally:
        op.stop()


def _ref(name: str, uid: str, namespace: str) -> SessionRef:
    return SessionRef(name=name, namespace=namespace, uid=uid)


def _decode(data: str) -> str:
    return base64.b64decode(data).decode()


def test_pool_workers_that_keep_failing_are_replaced_with_backoff(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(
        kube, namespace, entrypoint="kubesessions_worker.examples.echo:NoSuchApp", warmPool={"size": 2}
    )
    seen: set[str] = set()

    def record() -> bool:
        seen.update(p.metadata.name for p in kube.core.list_namespaced_pod(namespace).items)
        return len(seen) >= 4

    await_condition(record, 30, "failed pool workers to be replaced")
    window = time.monotonic() + 6
    await_condition(lambda: record() and time.monotonic() > window, 10, "six seconds of the pool failing")
    # Doubling waits after each exit: a handful of workers in those seconds, not a hot loop.
    assert len(seen) <= 10, f"{len(seen)} pool workers started"
    assert warm_pool(kube, namespace).get("ready") == 0
    create_session(kube, namespace, "s1", app="counter")
    failed = await_session(kube, namespace, "s1", phase_is("Failed"), 30, "Failed")
    assert (failed["status"]["reason"], failed["status"]["startedFrom"]) == ("SetupFailed", "cold")


def test_an_app_change_recreates_idle_pool_workers_or_waits_for_their_use(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace, warmPool={"size": 1, "strategy": "OnUse"})
    await_ready_pool(kube, namespace, 1)
    first = pool_pods(kube, namespace)[0].metadata.name

    def change(spec: dict[str, Any]) -> None:
        custom(kube).patch_namespaced_custom_object(*GROUP, namespace, "apps", "counter", {"spec": spec})

    change({"env": [{"name": "GREETING", "value": "one"}]})
    # OnUse: the started worker stays and is handed out as it is.
    create_session(kube, namespace, "s1", app="counter")
    status = await_session(kube, namespace, "s1", phase_is("Ready"), 30, "Ready")["status"]
    assert (status["startedFrom"], status["podName"]) == ("pool", first)
    await_ready_pool(kube, namespace, 1)
    second = pool_pods(kube, namespace)[0]
    env = {e.name: e.value for e in second.spec.containers[0].env}
    assert env["GREETING"] == "one", "its replacement has the new template"
    # Recreate: idle workers of the old template go at once.
    change({"warmPool": {"size": 1, "strategy": "Recreate"}, "env": [{"name": "GREETING", "value": "two"}]})
    await_condition(
        lambda: [p.metadata.name for p in pool_pods(kube, namespace)] not in ([], [second.metadata.name]),
        30,
        "the idle worker to be replaced",
    )
    await_ready_pool(kube, namespace, 1)
    third = pool_pods(kube, namespace)[0]
    assert {e.name: e.value for e in third.spec.containers[0].env}["GREETING"] == "two"


def test_kubectl_scale_gives_an_app_without_a_pool_one(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace)
    scale(kube, namespace, 1)
    await_ready_pool(kube, namespace, 1)
    app = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "apps", "counter")
    assert app["spec"]["warmPool"] == {"size": 1, "strategy": "Recreate"}
    scaled = custom(kube).get_namespaced_custom_object_scale(*GROUP, namespace, "apps", "counter")
    assert (scaled["spec"]["replicas"], scaled["status"]["replicas"]) == (1, 1)
    assert scaled["status"]["selector"] == POOL_SELECTOR
    scale(kube, namespace, 0)
    await_condition(
        lambda: not pool_pods(kube, namespace) and warm_pool(kube, namespace)["ready"] == 0,
        30,
        "the pool to empty at size 0",
    )


def test_pool_workers_count_as_the_apps_gpu_time_and_exit_when_no_operator_looks(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    """A live operator looks at its unclaimed pool workers (keeping them, and counting their
    GPU-seconds as the App's); with no operator (uninstalled, say) they give their GPUs back
    after the App's timeout plus the idle grace, as a forgotten session's worker does."""
    op = OperatorProcess(kube, namespace, tmp_path, "--idle-grace", "2").start()
    try:
        # A 6 s orphan window (the App's timeout plus the grace): the operator looks every 2 s.
        create_app(kube, namespace, warmPool={"size": 1}, defaultSessionTimeout=4, resources={"gpu": 1})
        await_ready_pool(kube, namespace, 1)
        [worker] = [p.metadata.name for p in pool_pods(kube, namespace)]
        series = f'kubesessions_pool_gpu_seconds_total{{namespace="{namespace}",app="counter"}}'
        await_condition(
            lambda: op.metrics().get(series, 0) >= 14, 60, "14 pool GPU-seconds counted (past two windows)"
        )
        [still] = pool_pods(kube, namespace)
        assert still.metadata.name == worker and still.status.phase == "Running", "looked at: kept"
    finally:
        op.stop()

    def exited() -> Any:
        pod = kube.core.read_namespaced_pod(worker, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = await_condition(exited, 30, "the unclaimed pool worker to exit with no operator looking")
    ended = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert ended["reason"] == "IdleTimeout", ended
    assert "unclaimed pool worker the operator has not looked at" in ended["message"], ended
