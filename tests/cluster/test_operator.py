"""The operator turns Sessions into worker pods on the local cluster and tells the truth about them."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..conftest import Cluster, OperatorProcess, await_condition, await_session, phase_is, reason_is

pytestmark = pytest.mark.cluster
REPO = Path(__file__).parent.parent.parent
WORKER_IMAGE = "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0"
GROUP = ("kubesessions.io", "v1alpha1")


def custom(kube: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api)


def create_app(kube: Cluster, namespace: str, name: str = "counter", **spec: Any) -> None:
    body = yaml.safe_load((REPO / "examples" / "app-counter.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    custom(kube).create_namespaced_custom_object(*GROUP, namespace, "apps", body)


def create_session(kube: Cluster, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": spec,
    }
    result: dict[str, Any] = custom(kube).create_namespaced_custom_object(*GROUP, namespace, "sessions", body)
    return result


def token_of(kube: Cluster, namespace: str, session: str) -> str:
    secret = kube.core.read_namespaced_secret(f"{session}-token", namespace)
    return base64.b64decode(secret.data["token"]).decode()


def call(
    ip: str, token: str | None, payload: dict[str, Any], path: str = "/run"
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{ip}:8080{path}", data=json.dumps(payload).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def children(kube: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def read(fn: Any, child: str) -> Any:
        try:
            return fn(child, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return {
        "pod": read(kube.core.read_namespaced_pod, name),
        "service": read(kube.core.read_namespaced_service, name),
        "secret": read(kube.core.read_namespaced_secret, f"{name}-token"),
    }


def gone(kube: Cluster, namespace: str, name: str) -> bool:
    return all(v is None for v in children(kube, namespace, name).values())


def test_session_becomes_a_restricted_worker_that_keeps_state(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace)
    session = create_session(kube, namespace, "s1", app="counter", sessionTimeout=300)
    ready = await_session(kube, namespace, "s1", phase_is("Ready"), 30, "Ready")
    status = ready["status"]
    assert status["endpoint"] == f"http://s1.{namespace}.svc:8080"
    assert status["sessionTimeout"] == 300
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])
    kids = children(kube, namespace, "s1")
    for kind, obj in kids.items():
        assert obj is not None, kind
        owner = obj.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "Session",
            "s1",
            session["metadata"]["uid"],
            True,
        )
        assert not any(k.startswith("kopf") for k in (obj.metadata.annotations or {}))
    pod = kids["pod"]
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.restart_policy == "Never"
    sc = pod.spec.containers[0].security_context
    assert (sc.allow_privilege_escalation, sc.read_only_root_filesystem, sc.capabilities.drop) == (
        False,
        True,
        ["ALL"],
    )
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert kids["service"].spec.selector["kubesessions.io/session"] == "s1"
    # The worker keeps state across calls, and wants its token.
    token = token_of(kube, namespace, "s1")
    assert call(status["podIP"], None, {"input": {"add": 1}})[0] == 401
    totals = [call(status["podIP"], token, {"input": {"add": n}})[1]["output"] for n in (1, 2, 3)]
    assert [t["total"] if isinstance(t, dict) else t for t in totals] == [1, 3, 6]
    out = kube_wait_ready(kube, namespace, "s1")
    assert "condition met" in out


def test_no_worker_is_held_back_reading_its_token(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # Were the Secret created alongside the pod, or the node's first refused read (the Node
    # authorizer lags the pod's binding) reported and retried seconds later, workers would
    # start with CreateContainerConfigError and a 2 s delay: seen in 3 of 10 sessions.
    create_app(kube, namespace)
    names = [f"tok{i}" for i in range(6)]
    for name in names:
        create_session(kube, namespace, name, app="counter", sessionTimeout=300)
    for name in names:
        await_session(kube, namespace, name, phase_is("Ready"), 30, f"{name} Ready")
    failures = [
        f"{e.involved_object.name}: {e.message}"
        for e in kube.core.list_namespaced_event(namespace).items
        if e.reason == "Failed" and e.involved_object.kind == "Pod"
    ]
    assert failures == [], failures


def kube_wait_ready(kube: Cluster, namespace: str, name: str) -> str:
    import subprocess

    proc = subprocess.run(
        [
            str(kube.kubectl),
            f"--kubeconfig={kube.kubeconfig}",
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            f"session/{name}",
            "--timeout=20s",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_gpu_session_is_gpu_limited(kube: Cluster, namespace: str, operator: OperatorProcess) -> None:
    create_app(kube, namespace)
    create_session(kube, namespace, "g1", app="counter", template={"resources": {"gpu": 1}})
    ready = await_session(kube, namespace, "g1", phase_is("Ready"), 30, "Ready")
    assert ready["status"]["gpus"]["requested"] == 1
    pod = kube.core.read_namespaced_pod("g1", namespace)
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)


def test_too_many_gpus_is_pending_with_the_reason(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace)
    create_session(kube, namespace, "big", app="counter", template={"resources": {"gpu": 8}})
    pending = await_session(
        kube,
        namespace,
        "big",
        reason_is("Unschedulable"),
        30,
        "Unschedulable",
    )
    assert pending["status"]["phase"] == "Pending"
    assert "nvidia.com/gpu" in pending["status"]["message"]
    scheduled = next(c for c in pending["status"]["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")


def test_bad_image_fails_with_a_clear_reason(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_session(kube, namespace, "img", template={"image": "registry.example/nope:1", "entrypoint": "a:B"})
    failed = await_session(kube, namespace, "img", phase_is("Failed"), 30, "Failed")
    assert failed["status"]["reason"] == "ImageError"
    assert "registry.example/nope:1" in failed["status"]["message"]


def test_setup_failure_is_reported(kube: Cluster, namespace: str, operator: OperatorProcess) -> None:
    create_session(
        kube,
        namespace,
        "bad",
        template={"image": WORKER_IMAGE, "entrypoint": "kubesessions_worker.examples.echo:NoSuchApp"},
    )
    failed = await_session(kube, namespace, "bad", phase_is("Failed"), 30, "Failed")
    assert failed["status"]["reason"] == "SetupFailed"
    assert "NoSuchApp" in failed["status"]["message"]


def test_killed_worker_is_worker_lost_within_5s(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace)
    create_session(kube, namespace, "k1", app="counter")
    await_session(kube, namespace, "k1", phase_is("Ready"), 30, "Ready")
    container_id = kube.core.read_namespaced_pod("k1", namespace).status.container_statuses[0].container_id
    os.kill(int(container_id.removeprefix("process://")), signal.SIGKILL)
    failed = await_session(kube, namespace, "k1", phase_is("Failed"), 5, "Failed within 5 s of the kill")
    assert failed["status"]["reason"] == "WorkerLost"
    await_condition(lambda: gone(kube, namespace, "k1"), 15, "the children of the lost session to be deleted")


def test_close_annotation_closes_and_tombstone_expires(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace)
    create_session(kube, namespace, "c1", app="counter")
    await_session(kube, namespace, "c1", phase_is("Ready"), 30, "Ready")
    patch = {"metadata": {"annotations": {"kubesessions.io/close": "done with it"}}}
    custom(kube).patch_namespaced_custom_object(*GROUP, namespace, "sessions", "c1", patch)
    closed = await_session(kube, namespace, "c1", phase_is("Closed"), 15, "Closed")
    assert (closed["status"]["reason"], closed["status"]["message"]) == ("ClosedByUser", "done with it")
    assert closed["status"]["endedAt"]
    # Its clocks stop: no expiry after the end, no idle column counting on.
    assert closed["status"]["expiresAt"] <= closed["status"]["endedAt"]
    assert "idleSince" not in closed["status"]
    await_condition(lambda: gone(kube, namespace, "c1"), 15, "children deleted")
    # The tombstone stays for the retention (5 s here), then goes.
    assert (
        custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", "c1")["status"]["phase"]
        == "Closed"
    )

    def session_gone() -> bool:
        try:
            custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", "c1")
        except ApiException as exc:
            return exc.status == 404
        return False

    await_condition(session_gone, 20, "the tombstone to be deleted after its retention")


def test_app_created_later_unblocks_the_session(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_session(kube, namespace, "late", app="later")
    waiting = await_session(
        kube,
        namespace,
        "late",
        reason_is("AppNotFound"),
        15,
        "AppNotFound",
    )
    assert waiting["status"]["phase"] == "Pending"
    create_app(kube, namespace, name="later")
    await_session(kube, namespace, "late", phase_is("Ready"), 30, "Ready once the App exists")


def app_not_found_events(kube: Cluster, namespace: str) -> list[str]:
    return [
        e.involved_object.name
        for e in kube.core.list_namespaced_event(namespace).items
        if e.reason == "AppNotFound"
    ]


def test_a_running_session_outlives_its_app(kube: Cluster, namespace: str, operator: OperatorProcess) -> None:
    # It needs its App only to start: deleted, the session runs on, is culled and ends as before.
    create_app(kube, namespace, name="brief", defaultSessionTimeout=3)
    create_session(kube, namespace, "outlives", app="brief")
    await_session(kube, namespace, "outlives", phase_is("Ready"), 30, "Ready")
    custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "apps", "brief")
    ended = await_session(
        kube, namespace, "outlives", phase_is("Closed", "Expired", "Failed"), 20, "the idle cull"
    )
    assert (ended["status"]["phase"], ended["status"]["reason"]) == ("Expired", "IdleTimeout")
    await_condition(lambda: gone(kube, namespace, "outlives"), 15, "the children of the culled session to go")
    assert app_not_found_events(kube, namespace) == []
    # Only a session not yet started waits for its App.
    create_session(kube, namespace, "unstarted", app="brief")
    waiting = await_session(kube, namespace, "unstarted", reason_is("AppNotFound"), 15, "AppNotFound")
    assert waiting["status"]["phase"] == "Pending"


def test_a_running_session_never_fails_because_its_app_changed(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace, name="edited", defaultSessionTimeout=3)
    create_session(kube, namespace, "own", app="edited", sessionTimeout=3)
    create_session(kube, namespace, "inherited", app="edited")
    for name in ("own", "inherited"):
        await_session(kube, namespace, name, phase_is("Ready"), 30, f"{name} Ready")
    # The App now refuses a 3 s timeout and offers 2 s; a restart makes the operator look anew.
    patch = {"spec": {"defaultSessionTimeout": 2, "maxSessionTimeout": 2}}
    custom(kube).patch_namespaced_custom_object(*GROUP, namespace, "apps", "edited", patch)
    operator.stop()
    operator.start()
    for name in ("own", "inherited"):
        ended = await_session(
            kube, namespace, name, phase_is("Closed", "Expired", "Failed"), 20, f"{name} culled"
        )
        status = ended["status"]
        assert (status["phase"], status["reason"], status["sessionTimeout"]) == ("Expired", "IdleTimeout", 3)


def test_delete_with_operator_stopped_still_deletes_children(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create_app(kube, namespace)
    create_session(kube, namespace, "d1", app="counter")
    await_session(kube, namespace, "d1", phase_is("Ready"), 30, "Ready")
    operator.stop()
    custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "sessions", "d1")
    await_condition(lambda: gone(kube, namespace, "d1"), 30, "the garbage collector to delete the children")


def test_orphans_are_swept_at_start(kube: Cluster, namespace: str, crds: None, tmp_path: Path) -> None:
    labels = {"app.kubernetes.io/managed-by": "kube-sessions", "kubesessions.io/session": "ghost"}
    kube.core.create_namespaced_service(
        namespace, {"metadata": {"name": "ghost", "labels": labels}, "spec": {"ports": [{"port": 8080}]}}
    )
    op = OperatorProcess(kube, namespace, tmp_path).start()
    try:
        await_condition(
            lambda: children(kube, namespace, "ghost")["service"] is None, 20, "the orphan Service to go"
        )
    finally:
        op.stop()


def test_operator_killed_during_creation_converges(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    count = 50
    op = OperatorProcess(kube, namespace, tmp_path).start()
    create_app(kube, namespace)
    for i in range(count):
        create_session(kube, namespace, f"m{i}", app="counter")
    await_condition(
        lambda: len(kube.core.list_namespaced_pod(namespace).items) >= 10, 30, "creation to be under way"
    )
    op.stop(signal.SIGKILL)
    op.start()
    try:

        def all_ready() -> bool:
            items = custom(kube).list_namespaced_custom_object(*GROUP, namespace, "sessions")["items"]
            return sum((s.get("status") or {}).get("phase") == "Ready" for s in items) == count

        await_condition(all_ready, 180, f"all {count} sessions to be Ready", every=1)
        assert len(kube.core.list_namespaced_pod(namespace).items) == count
        assert len(kube.core.list_namespaced_service(namespace).items) == count
        secrets = kube.core.list_namespaced_secret(
            namespace, label_selector="app.kubernetes.io/managed-by=kube-sessions"
        )
        assert len(secrets.items) == count
    finally:
        op.stop()
        # Free the node quickly: 50 worker processes.
        for i in range(count):
            custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "sessions", f"m{i}")
        await_condition(lambda: not kube.core.list_namespaced_pod(namespace).items, 60, "the workers to go")


def test_sigterm_stops_the_operator_at_once(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    """kopf waits up to 5 s for every task still running when it stops; its waiter on the stop
    flag was one (5 s on every SIGTERM: each rollout, each handover to a standby)."""
    op = OperatorProcess(kube, namespace, tmp_path).start()
    assert op.proc is not None
    # A running operator, as in a rollout: its watches serve (a SIGTERM within milliseconds of
    # the start meets kopf's discovery of the API, which retries for those 5 s).
    create_session(kube, namespace, "waiting", app="absent")
    await_session(kube, namespace, "waiting", reason_is("AppNotFound"), 30, "the operator to act")
    proc = op.proc
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=15)
    finally:
        op.stop()
    took = time.monotonic() - started
    assert code == 0, f"exit code {code} on SIGTERM; see {op.log}"
    assert took < 2.5, f"the operator took {took:.1f}s to stop on SIGTERM (kopf's 5 s wait for hung tasks?)"


def test_a_session_named_like_objects_it_does_not_own_fails_and_leaves_them(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """A Session named like an existing Service (and its Secret) neither adopts them nor
    deletes them when it ends: it fails, naming them (issue 25, defect 2)."""
    create_app(kube, namespace)
    service = kube.core.create_namespaced_service(
        namespace, {"metadata": {"name": "postgres"}, "spec": {"ports": [{"port": 5432}]}}
    )
    secret = kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "postgres-token"}, "stringData": {"token": "not-the-sessions-token"}}
    )
    create_session(kube, namespace, "postgres", app="counter")
    failed = await_session(kube, namespace, "postgres", phase_is("Failed"), 30, "Failed")
    status = failed["status"]
    assert status["reason"] == "NameConflict", status
    assert 'Service "postgres" already exists' in status["message"], status["message"]
    assert 'Secret "postgres-token" already exists' in status["message"], status["message"]
    assert "is not this Session's" in status["message"]
    custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "sessions", "postgres")

    def session_gone() -> bool:
        try:
            custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", "postgres")
        except ApiException as exc:
            return exc.status == 404
        return False

    await_condition(session_gone, 20, "the Session to be deleted")
    left = children(kube, namespace, "postgres")
    assert left["pod"] is None
    assert left["service"].metadata.uid == service.metadata.uid
    assert left["secret"].metadata.uid == secret.metadata.uid
    assert base64.b64decode(left["secret"].data["token"]) == b"not-the-sessions-token"


def test_a_session_made_again_under_its_name_waits_for_the_earlier_ones_children(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Deleted and at once made again: the earlier Session's children are not adopted (nor
    taken for a conflict); the new one starts its own once they are gone."""
    create_app(kube, namespace)
    create_session(kube, namespace, "again", app="counter")
    await_session(kube, namespace, "again", phase_is("Ready"), 30, "Ready")
    custom(kube).delete_namespaced_custom_object(*GROUP, namespace, "sessions", "again")
    made: list[dict[str, Any]] = []

    def made_again() -> bool:  # the API server may hold the first a moment yet
        try:
            made.append(create_session(kube, namespace, "again", app="counter"))
        except ApiException as exc:
            if exc.status != 409:
                raise
        return bool(made)

    await_condition(made_again, 20, "the name to be free for a second Session")
    second = made[0]
    ready = await_session(kube, namespace, "again", phase_is("Ready"), 60, "the second Session Ready")
    assert ready["metadata"]["uid"] == second["metadata"]["uid"]
    for kind, obj in children(kube, namespace, "again").items():
        assert obj is not None, kind
        assert obj.metadata.owner_references[0].uid == second["metadata"]["uid"], kind
