"""Idle sessions end when their timeout passes, never before, and never much later."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..conftest import Cluster, OperatorProcess, await_condition, await_session, phase_is
from .test_operator import GROUP, call, create_session, custom, token_of

pytestmark = pytest.mark.cluster
ECHO = {
    "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
    "entrypoint": "kubesessions_worker.examples.echo:Echo",
}
SLOW = {**ECHO, "entrypoint": "kubesessions_worker.examples.slow:Slow"}


def ready_worker(
    kube: Cluster, namespace: str, name: str, template: dict[str, Any], timeout: int
) -> tuple[str, str]:
    create_session(kube, namespace, name, template=template, sessionTimeout=timeout)
    ready = await_session(kube, namespace, name, phase_is("Ready"), 30, "Ready")
    return ready["status"]["podIP"], token_of(kube, namespace, name)


class PodEnd:
    """Records, from a watch, when a pod is first marked for deletion (or vanishes)."""

    def __init__(self, kube: Cluster, namespace: str, name: str) -> None:
        self.at: float | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._watch, args=(kube, namespace, name), daemon=True)
        self._thread.start()

    def _watch(self, kube: Cluster, namespace: str, name: str) -> None:
        from kubernetes import watch

        w = watch.Watch()
        for event in w.stream(
            kube.core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=120,
        ):
            if event["type"] == "DELETED" or event["object"].metadata.deletion_timestamp:
                self.at = time.monotonic()
                w.stop()
                return

    def wait(self, timeout: float, what: str) -> float:
        self._thread.join(timeout)
        if self.at is None:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        return self.at


def test_idle_session_is_culled_within_a_second_of_its_timeout(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ip, token = ready_worker(kube, namespace, "t2", ECHO, timeout=2)
    end = PodEnd(kube, namespace, "t2")
    # The idle clock starts when the worker ends the call: after it was sent, before its reply
    # arrives here (on a loaded machine the reply can take a good part of a second).
    sent = time.monotonic()
    assert call(ip, token, {"input": "last"})[0] == 200
    answered = time.monotonic()
    culled = end.wait(10, "the idle pod to be deleted")
    assert culled - sent >= 2.0, f"culled {culled - sent:.2f}s after the last call was sent (timeout 2 s)"
    assert culled - answered <= 3.0, f"culled {culled - answered:.2f}s after the last reply (timeout 2 s)"
    expired = await_session(kube, namespace, "t2", phase_is("Expired"), 5, "Expired")
    assert expired["status"]["reason"] == "IdleTimeout"


def test_session_called_every_second_survives(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ip, token = ready_worker(kube, namespace, "busy", ECHO, timeout=2)
    started = time.monotonic()
    while time.monotonic() - started < 10:
        status, body = call(ip, token, {"input": "ping"})
        assert status == 200, body
        time.sleep(1)  # the client's pace, not a wait for a condition
    session = custom(kube).get_namespaced_custom_object(*GROUP, namespace, "sessions", "busy")
    assert session["status"]["phase"] == "Ready"
    assert session["status"]["calls"] >= 8
    # `kubectl get sess` shows idleness from the activity the operator records.
    assert session["status"]["idleSince"] == session["status"]["lastActivityTime"]


def test_long_call_is_never_culled_and_culled_after(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ip, token = ready_worker(kube, namespace, "slow", SLOW, timeout=1)
    end = PodEnd(kube, namespace, "slow")
    sent = time.monotonic()
    status, body = call(ip, token, {"input": {"seconds": 5}})
    call_ended = time.monotonic()
    assert (status, body["output"]) == (200, {"slept": 5.0}), "a 5 s call with timeout 1 s must complete"
    assert end.at is None, "culled during the call"
    culled = end.wait(10, "the pod to be culled after the call")
    # The worker ended the call at least 5 s after it was sent, before its reply arrived here.
    assert culled - sent >= 5.0 + 1.0, (
        f"culled {culled - sent:.2f}s after the 5 s call was sent (timeout 1 s)"
    )
    assert culled - call_ended <= 2.0, f"culled {culled - call_ended:.2f}s after the call ended (timeout 1 s)"


def test_keepalive_annotation_extends_the_session(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ip, token = ready_worker(kube, namespace, "kept", ECHO, timeout=2)
    end = PodEnd(kube, namespace, "kept")
    assert call(ip, token, {"input": "x"})[0] == 200
    time.sleep(1.2)  # part of the timeout passes, then the keepalive comes
    patch = {"metadata": {"annotations": {"kubesessions.io/keepalive": "k1"}}}
    custom(kube).patch_namespaced_custom_object(*GROUP, namespace, "sessions", "kept", patch)
    kept_at = time.monotonic()
    culled = end.wait(10, "the pod to be culled after the keepalive")
    assert 2.0 <= culled - kept_at <= 3.2, f"culled {culled - kept_at:.2f}s after the keepalive (timeout 2 s)"


def test_timeout_of_one_second(kube: Cluster, namespace: str, operator: OperatorProcess) -> None:
    ip, token = ready_worker(kube, namespace, "one", ECHO, timeout=1)
    end = PodEnd(kube, namespace, "one")
    assert call(ip, token, {"input": 1})[0] == 200
    last_call = time.monotonic()
    culled = end.wait(10, "the pod to be culled")
    assert 1.0 <= culled - last_call <= 2.0


def test_operator_down_while_a_session_expires(
    kube: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ip, token = ready_worker(kube, namespace, "late", ECHO, timeout=2)
    assert call(ip, token, {"input": 1})[0] == 200
    operator.stop()
    time.sleep(3)  # the deadline passes while nobody watches
    end = PodEnd(kube, namespace, "late")
    restarted = time.monotonic()
    operator.start()
    culled = end.wait(20, "the overdue session to be culled after the restart")
    assert culled - restarted <= 5, f"culled {culled - restarted:.2f}s after the restart"
    assert (
        await_session(kube, namespace, "late", phase_is("Expired"), 5, "Expired")["status"]["reason"]
        == "IdleTimeout"
    )


def test_worker_exits_by_itself_when_nobody_culls_it(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    op = OperatorProcess(kube, namespace, tmp_path, "--idle-grace", "1").start()
    try:
        # 5 s: the operator dies (SIGKILL, at once: kopf's clean stop can take seconds on a busy
        # machine) well before it would cull the session; the call below restarts the idle clock.
        ip, token = ready_worker(kube, namespace, "alone", ECHO, timeout=5)
    finally:
        op.stop(signal.SIGKILL)
    assert call(ip, token, {"input": 1})[0] == 200

    def exited() -> Any:
        try:
            pod = kube.core.read_namespaced_pod("alone", namespace)
        except ApiException:
            return None
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = await_condition(exited, 20, "the worker to exit by itself (timeout 5 s + grace 1 s)")
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0
    assert '"reason": "IdleTimeout"' in term.message
    op.start()
    try:
        ended = await_session(kube, namespace, "alone", phase_is("Expired"), 15, "Expired after the restart")
        assert ended["status"]["reason"] == "IdleTimeout"
    finally:
        op.stop()


def test_unreachable_worker_becomes_worker_lost(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    op = OperatorProcess(kube, namespace, tmp_path, "--unreachable-limit", "2").start()
    try:
        ready_worker(kube, namespace, "mute", ECHO, timeout=60)
        # The token Secret changes under the operator's feet: every status call is refused.
        secret = client.V1Secret(string_data={"token": "not-the-token"})
        kube.core.patch_namespaced_secret("mute-token", namespace, secret)
        op.stop()
        op.start()  # forgets the cached token
        lost = await_session(kube, namespace, "mute", phase_is("Failed"), 30, "WorkerLost")
        assert lost["status"]["reason"] == "WorkerLost"
        assert "401" in lost["status"]["message"]
    finally:
        op.stop()
