"""Suspend and resume on the local cluster, with its real state store (SeaweedFS): an idle
session's state is saved and its worker stops; the next call wakes it with its state; a resume
lands on a warm pool worker when its App has one; the keep time ends it; its state goes with it.
Faults inside a suspend or a resume (tests/cluster/apps/gated.py holds the app there), what a
worker can reach of other sessions' state, and the GPU a suspended session frees."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubesessions.api import names
from kubesessions.client import Client, SessionEnded, SessionExpired
from kubesessions.common.timefmt import rfc3339
from kubesessions.localcluster import objectstore
from kubesessions.statestore import StoreConfig
from kubesessions.statestore.store import StateStore
from tests.faults import faults

from ..conftest import Cluster, OperatorProcess, await_condition, await_session, phase_is, reason_is
from .conftest import GatewayProcess, service_account_token
from .test_operator import GROUP, call, create_app, create_session, custom, token_of

pytestmark = pytest.mark.cluster

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def store(kube: Cluster) -> Iterator[StateStore]:
    """The local cluster's state store, as the operator is given it."""
    assert kube.state_dir is not None
    config = StoreConfig.from_env(objectstore.operator_env(kube.state_dir.root))
    assert config is not None, "the local cluster runs a state store"
    state = StateStore(config)
    yield state
    state.close()


def stored(store: StateStore, namespace: str, name: str) -> list[str]:
    return asyncio.run(store.keys(f"{names.STATE_PREFIX}{namespace}/{name}/"))


def pod_gone(kube: Cluster, namespace: str, name: str) -> bool:
    try:
        pod = kube.core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        return exc.status == 404
    return pod.metadata.deletion_timestamp is not None


def fetch(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def pool_ready(kube: Cluster, namespace: str, app: str) -> int:
    body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "apps", app)
    return int(((body.get("status") or {}).get("warmPool") or {}).get("ready") or 0)


def app_condition(kube: Cluster, namespace: str, app: str) -> dict[str, Any]:
    body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "apps", app)
    conditions = (body.get("status") or {}).get("conditions") or []
    return next(c for c in conditions if c["type"] == "SuspendAvailable")


def suspendable_app(kube: Cluster, namespace: str, name: str, **spec: Any) -> None:
    create_app(kube, namespace, name, suspend={"enabled": True, "keepSeconds": 60}, **spec)


def test_an_idle_session_suspends_and_the_next_call_wakes_it_with_its_state(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    suspendable_app(kube, namespace, "counter-s")
    token = service_account_token(kube, namespace, "suspender", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        first = client.run({"app": "counter-s", "input": {"add": 42}, "session": "new", "session_timeout": 2})
        session_id = first["session_id"]
        assert first["output"]["total"] == 42
        suspended = await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
        status = suspended["status"]
        assert status["reason"] == "IdleTimeout"
        saved = status["suspension"]
        assert saved["bytes"] > 0 and len(saved["sha256"]) == 64
        assert saved["key"] == names.state_key(namespace, session_id, suspended["metadata"]["uid"])
        assert status["expiresAt"] == saved["expiresAt"] and "podIP" not in status
        await_condition(lambda: pod_gone(kube, namespace, session_id), 30, "the worker pod to go")
        assert stored(store, namespace, session_id) == [saved["key"]]
        shown = kube.run_kubectl("get", "sess", session_id, "-n", namespace)
        assert shown.stdout.splitlines()[1].split()[1] == "Suspended", shown.stdout
        info = client.get_session(session_id)
        assert (info["phase"], info["expires_at"]) == ("Suspended", saved["expiresAt"])

        # The next call wakes it, on a new worker that has the state.
        again = client.run({"app": "counter-s", "input": {"add": 1}, "session": session_id})
        assert (again["output"]["total"], again["output"]["calls"]) == (43, 2)
        resumed = await_session(
            kube,
            namespace,
            session_id,
            lambda s: names.RESUME_REQUESTED not in (s["metadata"].get("annotations") or {}),
            10,
            "the operator to remove the resume request it acted on",
        )
        assert resumed["status"]["phase"] == "Ready" and "suspension" not in resumed["status"]
        assert resumed["status"]["startedFrom"] == "cold"
        await_condition(lambda: not stored(store, namespace, session_id), 10, "the used state to be deleted")
        condition = app_condition(kube, namespace, "counter-s")
        assert (condition["status"], condition["reason"]) == ("True", "Suspendable")
        events = kube.run_kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={session_id}"
        )
        assert "Suspended" in events.stdout and "Resuming" in events.stdout, events.stdout


def test_suspend_and_resume_by_hand_land_on_a_pool_worker(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    suspendable_app(kube, namespace, "counter-p", warmPool={"size": 1})
    token = service_account_token(kube, namespace, "pooler", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        first = client.run(
            {"app": "counter-p", "input": {"add": 7}, "session": "new", "session_timeout": 300}
        )
        session_id = first["session_id"]
        asked = client.suspend(session_id)
        assert asked["session_id"] == session_id
        suspended = await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
        assert suspended["status"]["reason"] == "SuspendRequested"
        assert names.SUSPEND_REQUESTED not in (suspended["metadata"].get("annotations") or {})
        # A keepalive moves the keep time without waking it.
        before = suspended["status"]["expiresAt"]
        client.keepalive(session_id)
        moved = await_session(
            kube,
            namespace,
            session_id,
            lambda s: s["status"].get("expiresAt", "") > before,
            15,
            "a later expiry",
        )
        assert moved["status"]["phase"] == "Suspended"

        await_condition(
            lambda: pool_ready(kube, namespace, "counter-p") == 1,
            60,
            "a ready pool worker",
        )
        client.resume(session_id)
        ready = await_session(kube, namespace, session_id, phase_is("Ready"), 60, "Ready again")
        assert ready["status"]["startedFrom"] == "pool"
        assert (
            client.run({"app": "counter-p", "input": {"add": 1}, "session": session_id})["output"]["total"]
            == 8
        )


def test_the_keep_time_ends_it_and_a_deleted_session_takes_its_state(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    suspendable_app(kube, namespace, "counter-k")
    token = service_account_token(kube, namespace, "keeper", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        ids = [
            client.run({"app": "counter-k", "input": {"add": 1}, "session": "new", "session_timeout": 300})[
                "session_id"
            ]
            for _ in range(2)
        ]
        for session_id in ids:
            kube.run_kubectl(
                "annotate", "sess", session_id, "-n", namespace, f"{names.SUSPEND_REQUESTED}={rfc3339()}"
            )
        for session_id in ids:
            await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
            assert len(stored(store, namespace, session_id)) == 1
        expiring, deleted = ids
        # What a worker is given opens its own session's state only: the URL for one key,
        # pointed at the other's, is refused by the store (the signature covers the key).
        own, other = (stored(store, namespace, i)[0] for i in ids)
        url = store.presign_get(own)
        assert fetch(url) == 200
        assert fetch(url.replace(own, other)) == 403
        custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "sessions", deleted)
        await_condition(
            lambda: not stored(store, namespace, deleted), 15, "the deleted session's state to go"
        )

        expired = await_session(kube, namespace, expiring, phase_is("Expired"), 90, "the keep time to end it")
        assert expired["status"]["reason"] == "SuspendExpired"
        assert not stored(store, namespace, expiring)
        with pytest.raises(SessionExpired, match=r"session not found.*SuspendExpired"):
            client.run({"app": "counter-k", "input": {"add": 1}, "session": expiring})


def test_an_app_without_suspend_methods_ends_idle_and_a_failed_resume_fails_the_session(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    create_app(
        kube,
        namespace,
        "echo-s",
        entrypoint="kubesessions_worker.examples.echo:Echo",
        suspend={"enabled": True, "keepSeconds": 60},
    )
    suspendable_app(kube, namespace, "counter-f")
    token = service_account_token(kube, namespace, "failer", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        echo = client.run({"app": "echo-s", "input": "hi", "session": "new", "session_timeout": 1})[
            "session_id"
        ]
        ended = await_session(kube, namespace, echo, phase_is("Expired"), 30, "the idle echo session to end")
        assert ended["status"]["reason"] == "IdleTimeout"
        assert "not suspended: the app defines no suspend(dir) and resume(dir)" in ended["status"]["message"]
        await_condition(
            lambda: app_condition(kube, namespace, "echo-s")["reason"] == "AppNotSuspendable",
            15,
            "the App to say its app cannot suspend",
        )
        assert app_condition(kube, namespace, "echo-s")["status"] == "False"

        # A state that is gone when the session wakes: Failed, saying so, and no call runs.
        counter = client.run(
            {"app": "counter-f", "input": {"add": 5}, "session": "new", "session_timeout": 300}
        )
        session_id = counter["session_id"]
        client.suspend(session_id)
        suspended = await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
        asyncio.run(store.delete(suspended["status"]["suspension"]["key"]))
        with pytest.raises(SessionEnded, match="ResumeFailed"):
            client.run({"app": "counter-f", "input": {"add": 1}, "session": session_id})
        failed = await_session(kube, namespace, session_id, phase_is("Failed"), 30, "Failed")
        assert failed["status"]["reason"] == "ResumeFailed"


def test_a_suspend_whose_answer_the_operator_lost_is_recorded_from_the_workers_exit(
    gateway: GatewayProcess, operator: OperatorProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    """The operator dies after it wrote Suspending and asked the worker to suspend: the worker
    saves the state and exits; the operator that comes back records the suspend from the
    worker's termination message (nothing saved is lost, and no state is used half-written)."""
    suspendable_app(kube, namespace, "counter-r")
    token = service_account_token(kube, namespace, "restarter", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        session_id = client.run(
            {"app": "counter-r", "input": {"add": 42}, "session": "new", "session_timeout": 300}
        )["session_id"]
        operator.stop(signal.SIGKILL)
        body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", session_id)
        # Where the operator was when it died: Suspending written, /suspend called.
        custom(kube).patch_namespaced_custom_object_status(
            *GROUP, namespace, "sessions", session_id, {"status": {"phase": "Suspending"}}
        )
        key = names.state_key(namespace, session_id, body["metadata"]["uid"])
        answer = worker_call(
            body["status"]["podIP"],
            token_of(kube, namespace, session_id),
            "/suspend",
            {"url": store.presign_put(key), "max_bytes": 1 << 20},
        )
        await_condition(
            lambda: pod_gone(kube, namespace, session_id) or exited(kube, namespace, session_id),
            30,
            "the worker to exit",
        )
        operator.start()
        suspended = await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
        saved = suspended["status"]["suspension"]
        assert (saved["bytes"], saved["sha256"], saved["key"]) == (answer["bytes"], answer["sha256"], key)
        assert (
            client.run({"app": "counter-r", "input": {"add": 1}, "session": session_id})["output"]["total"]
            == 43
        )


def exited(kube: Cluster, namespace: str, name: str) -> bool:
    pod = kube.core.read_namespaced_pod(name, namespace)
    return any(s.state.terminated for s in pod.status.container_statuses or [])


def worker_call(ip: str, token: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    status, body = call(ip, token, payload, path)
    assert status == 200, body
    return body


def test_a_session_started_cold_resumes_on_a_pool_worker(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    suspendable_app(kube, namespace, "counter-c", warmPool={"size": 1})
    token = service_account_token(kube, namespace, "coldpool", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        await_condition(lambda: pool_ready(kube, namespace, "counter-c") == 1, 60, "a ready pool worker")
        run = {"app": "counter-c", "input": {"add": 3}, "session": "new", "session_timeout": 300}
        first, second = client.run(run)["session_id"], client.run(run)["session_id"]
        started = {
            sid: custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", sid)["status"][
                "startedFrom"
            ]
            for sid in (first, second)
        }
        assert started == {first: "pool", second: "cold"}, started
        client.suspend(second)
        await_session(kube, namespace, second, phase_is("Suspended"), 30, "Suspended")
        await_condition(lambda: pool_ready(kube, namespace, "counter-c") == 1, 60, "a ready pool worker")
        assert (
            client.run({"app": "counter-c", "input": {"add": 1}, "session": second})["output"]["total"] == 4
        )
        resumed = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", second)
        assert resumed["status"]["startedFrom"] == "pool"


def gated_app(kube: Cluster, namespace: str, name: str, gate: Path) -> None:
    """tests/cluster/apps/gated.py's counter, its suspend and resume held by files in ``gate``."""
    gate.mkdir()
    env = [{"name": "PYTHONPATH", "value": str(APPS)}, {"name": "GATE_DIR", "value": str(gate)}]
    suspendable_app(kube, namespace, name, entrypoint="gated:GatedCounter", env=env)


def test_a_worker_killed_inside_its_suspend_ends_the_session_saying_so_and_leaves_nothing(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore, tmp_path: Path
) -> None:
    """kill -9 lands inside the app's suspend (part of its state written): nothing reaches the
    store, the session is not Suspended but ends saying its worker was lost, nothing is left."""
    assert kube.state_dir is not None, "kills a pod's processes: needs the local cluster this run started"
    gate = tmp_path / "gate"
    gated_app(kube, namespace, "counter-ks", gate)
    (gate / "hold-suspend").touch()
    token = service_account_token(kube, namespace, "killer", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        session_id = client.run(
            {"app": "counter-ks", "input": {"add": 42}, "session": "new", "session_timeout": 2}
        )["session_id"]
        await_condition(lambda: (gate / "suspend-started").exists(), 30, "the app's suspend to start")
        body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", session_id)
        assert body["status"]["phase"] == "Suspending"
        pod_uid = kube.core.read_namespaced_pod(session_id, namespace).metadata.uid
        faults.kill(faults.pod_processes(kube.state_dir, pod_uid))
        ended = await_session(
            kube, namespace, session_id, phase_is("Expired", "Failed"), 60, "the session to end"
        )
        status = ended["status"]
        assert "suspension" not in status, status
        assert "not suspended" in status["message"] and "WORKER" in status["message"], status
        assert not stored(store, namespace, session_id)
        await_condition(lambda: pod_gone(kube, namespace, session_id), 30, "the worker pod to go")
        with pytest.raises((SessionEnded, SessionExpired)):
            client.run({"app": "counter-ks", "input": {"add": 1}, "session": session_id})


def test_an_operator_back_while_the_suspend_it_asked_for_runs_waits_for_the_workers_exit(
    gateway: GatewayProcess,
    operator: OperatorProcess,
    kube: Cluster,
    namespace: str,
    store: StateStore,
    tmp_path: Path,
) -> None:
    """The operator dies inside the app's suspend and the one that comes back finds it still
    running: asked again, the worker says a suspend is under way; the session stays Suspending
    (not Ready) until the worker's exit records the suspend, and its next call has the state."""
    gate = tmp_path / "gate"
    gated_app(kube, namespace, "counter-ko", gate)
    token = service_account_token(kube, namespace, "suspkiller", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        session_id = client.run(
            {"app": "counter-ko", "input": {"add": 42}, "session": "new", "session_timeout": 300}
        )["session_id"]
        (gate / "hold-suspend").touch()
        try:
            client.suspend(session_id)
            await_condition(lambda: (gate / "suspend-started").exists(), 30, "the app's suspend to start")
            operator.stop(signal.SIGKILL)
            operator.start()
            await_condition(
                lambda: "a suspend asked for before is under way" in operator.log.read_text(),
                30,
                "the new operator to find the suspend under way",
            )
            body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", session_id)
            assert body["status"]["phase"] == "Suspending", body["status"]
        finally:
            (gate / "hold-suspend").unlink()
        suspended = await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
        assert stored(store, namespace, session_id) == [suspended["status"]["suspension"]["key"]]
        answer = client.run({"app": "counter-ko", "input": {"add": 1}, "session": session_id})["output"]
        assert (answer["total"], answer["calls"]) == (43, 2)


def test_an_operator_killed_inside_a_resume_resumes_once_when_back(
    gateway: GatewayProcess,
    operator: OperatorProcess,
    kube: Cluster,
    namespace: str,
    store: StateStore,
    tmp_path: Path,
) -> None:
    """The operator dies while the app's resume runs; the one that comes back asks the worker
    again: it gets that resume's outcome (no second resume, the state not deleted from under
    it, the session not Ready before it), and the waking call runs once on the whole state."""
    gate = tmp_path / "gate"
    gated_app(kube, namespace, "counter-kr", gate)
    token = service_account_token(kube, namespace, "rekiller", allowed=True)
    with (
        Client(gateway.url, token=token, namespace=namespace, request_timeout=120) as client,
        ThreadPoolExecutor(1) as caller,
    ):
        session_id = client.run(
            {"app": "counter-kr", "input": {"add": 42}, "session": "new", "session_timeout": 300}
        )["session_id"]
        client.suspend(session_id)
        suspended = await_session(kube, namespace, session_id, phase_is("Suspended"), 30, "Suspended")
        key = suspended["status"]["suspension"]["key"]
        (gate / "hold-resume").touch()
        try:
            woken = caller.submit(
                client.run, {"app": "counter-kr", "input": {"add": 1}, "session": session_id}
            )
            await_condition(lambda: (gate / "resume-started").exists(), 60, "the app's resume to start")
            operator.stop(signal.SIGKILL)
            operator.start()
            await_condition(
                lambda: operator.log.read_text().count("resuming ") >= 2, 60, "the new operator to ask again"
            )
            # While the first resume runs, whatever the new operator does: still Resuming, state kept.
            watch_until = time.monotonic() + 5
            while time.monotonic() < watch_until:
                body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", session_id)
                assert body["status"]["phase"] == "Resuming", body["status"]
                assert stored(store, namespace, session_id) == [key]
                time.sleep(0.2)
        finally:
            (gate / "hold-resume").unlink()  # the resume goes on, the call is answered
        answer = woken.result(timeout=120)
        assert (answer["output"]["total"], answer["output"]["calls"]) == (43, 2)
        assert (gate / "resumed").read_text().splitlines() == ["42"]
        await_condition(lambda: not stored(store, namespace, session_id), 15, "the used state to be deleted")
        ready = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", session_id)
        assert ready["status"]["phase"] == "Ready"


def test_a_worker_reaches_no_other_sessions_state(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore, tmp_path: Path
) -> None:
    """From inside session B's worker (its app's own code): the URLs B is given for its own
    state work; one edited to A's key, and the store without a signature, are refused; A's
    suspended state comes back whole."""
    gated_app(kube, namespace, "counter-x", tmp_path / "gate")
    token = service_account_token(kube, namespace, "prober", allowed=True)
    with Client(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        new = {"app": "counter-x", "session": "new", "session_timeout": 300}
        a = client.run({**new, "input": {"add": 42}})["session_id"]
        b = client.run({**new, "input": {"add": 7}})["session_id"]
        client.suspend(a)
        suspended = await_session(kube, namespace, a, phase_is("Suspended"), 30, "A Suspended")
        a_key = suspended["status"]["suspension"]["key"]
        b_body = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", b)
        b_key = names.state_key(namespace, b, b_body["metadata"]["uid"])

        def probe(url: str, method: str) -> int:
            answer = client.run(
                {
                    "app": "counter-x",
                    "function": "probe",
                    "input": {"url": url, "method": method},
                    "session": b,
                }
            )
            return int(answer["output"])

        # What the operator gives B's worker: a PUT at its suspend, a GET at its resume.
        own_put, own_get = store.presign_put(b_key), store.presign_get(b_key)
        assert (probe(own_put, "PUT"), probe(own_get, "GET")) == (200, 200)
        assert probe(own_get.replace(b_key, a_key), "GET") == 403
        assert probe(own_put.replace(b_key, a_key), "PUT") == 403
        bare = f"{store.config.endpoint}/{store.config.bucket}"
        assert probe(f"{bare}/{a_key}", "GET") in (401, 403)
        assert probe(f"{bare}/{a_key}", "PUT") in (401, 403)
        assert probe(f"{bare}?list-type=2", "GET") in (401, 403)
        asyncio.run(store.delete(b_key))  # the probe's own object: not a suspend's

        woken = client.run({"app": "counter-x", "input": {"add": 1}, "session": a})["output"]
        assert (woken["total"], woken["calls"]) == (43, 2)


def test_a_suspended_session_frees_its_gpu_for_another_and_wakes_when_one_is_free(
    gateway: GatewayProcess, kube: Cluster, namespace: str, store: StateStore
) -> None:
    """The process node has 2 GPUs; a second GPU session holds one, so one is left, as on a
    1-GPU node: a session that asks for it waits while the first holds it, gets it once the
    first is suspended; the first, woken, waits for a GPU and resumes when one is free."""
    resources = {"cpu": "500m", "memory": "512Mi", "gpu": 1}
    suspendable_app(kube, namespace, "counter-gpu", resources=resources)
    token = service_account_token(kube, namespace, "gpuer", allowed=True)
    with (
        Client(gateway.url, token=token, namespace=namespace, request_timeout=120) as client,
        ThreadPoolExecutor(1) as caller,
    ):
        new = {"app": "counter-gpu", "session": "new", "session_timeout": 300}
        first = client.run({**new, "input": {"add": 42}})["session_id"]
        holder = client.run({**new, "input": {"add": 1}})["session_id"]
        create_session(kube, namespace, "late", app="counter-gpu")
        waiting = await_session(kube, namespace, "late", reason_is("Unschedulable"), 30, "no GPU for late")
        assert "nvidia.com/gpu" in waiting["status"]["message"]

        client.suspend(first)
        await_session(kube, namespace, first, phase_is("Suspended"), 30, "Suspended")
        late = await_session(kube, namespace, "late", phase_is("Ready"), 60, "late to get the GPU")
        assert late["status"]["gpus"]["requested"] == 1

        woken = caller.submit(client.run, {"app": "counter-gpu", "input": {"add": 1}, "session": first})
        resuming = await_session(kube, namespace, first, reason_is("Unschedulable"), 30, "no GPU to wake on")
        assert resuming["status"]["phase"] == "Resuming" and not woken.done()
        client.close_session(holder)
        answer = woken.result(timeout=120)
        assert (answer["output"]["total"], answer["output"]["calls"]) == (43, 2)
