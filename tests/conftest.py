"""Shared fixtures: one local cluster per test run, a fresh namespace per test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
from kubernetes import client, config, watch

from kubesessions.localcluster import binaries, cluster, objectstore
from kubesessions.localcluster.nodeconfig import NodeConfig

T = TypeVar("T")


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl: Path
    state_dir: cluster.StateDir | None  # None when the run uses a cluster it did not start
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def run_kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl against this cluster, as a user types it; its outcome, checked by the caller."""
        return subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="session")
def kube() -> Iterator[Cluster]:
    """The cluster for this run: KUBESESSIONS_TEST_KUBECONFIG names one, else start one."""
    kubectl = binaries.ensure_binaries(("kubectl",))["kubectl"]
    named = os.environ.get("KUBESESSIONS_TEST_KUBECONFIG")
    if named:
        yield Cluster(Path(named), kubectl, None, config.new_client_from_config(config_file=named))
        return
    state_dir = cluster.StateDir(Path(os.environ.get("KUBESESSIONS_TEST_STATE_DIR", ".localcluster-test")))
    if cluster.running_state(state_dir) is not None:
        cluster.down(state_dir)
    cluster.up(state_dir, NodeConfig(gpus=2))
    api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
    try:
        yield Cluster(state_dir.kubeconfig, kubectl, state_dir, api)
    finally:
        api.close()
        cluster.down(state_dir)


@pytest.fixture
def namespace(kube: Cluster) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods need it to be admitted)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = kube.core
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await_condition(
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f"default ServiceAccount in namespace {name}",
    )
    yield name
    core.delete_namespace(name)


def await_condition(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``.

    For state that has no watch (processes, sockets); API objects use :func:`await_pod`.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _pod_events(
    kube: Cluster, namespace: str, name: str, version: str, timeout: float
) -> Iterator[tuple[str, Any]]:
    """(type, pod) of one pod's watch events from ``version``, until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    w = watch.Watch()
    while (left := deadline - time.monotonic()) > 0:
        for event in w.stream(
            kube.core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=max(1, int(left)),
        ):
            version = event["object"].metadata.resource_version
            yield event["type"], event["object"]


def await_pod_deleted(kube: Cluster, namespace: str, name: str, timeout: float) -> None:
    """Watch one pod until its object is deleted (the end of its graceful deletion)."""
    try:
        version = kube.core.read_namespaced_pod(name, namespace).metadata.resource_version
    except client.ApiException as exc:
        if exc.status == 404:
            return
        raise
    if any(kind == "DELETED" for kind, _ in _pod_events(kube, namespace, name, version, timeout)):
        return
    pytest.fail(f"pod {namespace}/{name}: still there after {timeout:.0f}s")


def await_pod(
    kube: Cluster, namespace: str, name: str, check: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    """Watch one pod until ``check(pod)`` holds; fail with the pod's last status otherwise."""
    pod = kube.core.read_namespaced_pod(name, namespace)
    if check(pod):
        return pod
    for kind, seen in _pod_events(kube, namespace, name, pod.metadata.resource_version, timeout):
        pod = seen
        if kind != "DELETED" and check(pod):
            return pod
    pytest.fail(
        f"pod {namespace}/{name}: timed out after {timeout:.0f}s waiting for {what}; last status: {pod.status}"
    )


REPO = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def crds(kube: Cluster) -> None:
    """The committed CRDs installed and served."""
    from kubernetes import utils

    for path in sorted((REPO / "crds").glob("*.yaml")):
        try:
            utils.create_from_yaml(kube.api, str(path))
        except utils.FailToCreateError as exc:
            if not all(e.status == 409 for e in exc.api_exceptions):
                raise
    ext = client.ApiextensionsV1Api(kube.api)
    for name in ("sessions.kubesessions.io", "apps.kubesessions.io"):
        await_condition(
            lambda n=name: any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(n).status.conditions or []
            ),
            timeout=30,
            what=f"CRD {name} to be established",
        )


class ServiceProcess:
    """A `kubesessions <command>` as a real process serving one namespace, awaited until its
    health endpoint answers; subclasses say which command, flags and endpoint."""

    command = ""
    health_path = "/healthz"

    def __init__(self, kube: Cluster, namespace: str, log_dir: Path, *args: str) -> None:
        self.kube, self.namespace, self.args = kube, namespace, args
        self.log = log_dir / f"{self.command}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flags(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def start(self) -> Self:
        self.port = _free_port()
        env = {**os.environ, **self.environment(), "KUBECONFIG": str(self.kube.kubeconfig)}
        argv = [
            str(Path(sys.executable).parent / "kubesessions"),
            self.command,
            "--namespace",
            self.namespace,
            *self.flags(),
            *self.args,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        await_condition(
            self._healthy,
            timeout=30,
            what=f"the {self.command} to serve {self.health_path} (log: {self.log})",
        )
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(
                f"the {self.command} exited with {self.proc.returncode}; log:\n{self.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}{self.health_path}", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class OperatorProcess(ServiceProcess):
    """`kubesessions operator` watching one namespace; /healthz and /metrics on its port."""

    command = "operator"

    def flags(self) -> list[str]:
        return ["--metrics-port", str(self.port)]

    def environment(self) -> dict[str, str]:
        """The local cluster's state store, as the chart hands it to the operator."""
        if self.kube.state_dir is None:
            return {}
        return objectstore.operator_env(self.kube.state_dir.root)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            lines = resp.read().decode().splitlines()
        return {
            k: float(v) for k, _, v in (ln.rpartition(" ") for ln in lines if ln and not ln.startswith("#"))
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def operator(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """A running operator for this test's namespace (short tombstone retention). The end of its
    log is printed when the test fails: CI keeps no other trace of what the operator did."""
    op = OperatorProcess(kube, namespace, tmp_path, "--retention", "5").start()
    yield op
    op.stop()
    if request.node.stash.get(FAILED, False):
        print(f"--- the operator's log ({op.log}), last 80 lines ---")
        print("\n".join(op.log.read_text(errors="replace").splitlines()[-80:]))


def await_session(
    kube: Cluster,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """Watch one Session until ``check(session)`` holds; fail with its last status otherwise."""
    custom = client.CustomObjectsApi(kube.api)
    args = ("kubesessions.io", "v1alpha1", namespace, "sessions")
    obj: dict[str, Any] = custom.get_namespaced_custom_object(*args, name)
    if check(obj):
        return obj
    deadline = time.monotonic() + timeout
    w = watch.Watch()
    version = obj["metadata"]["resourceVersion"]
    while (left := deadline - time.monotonic()) > 0:
        for event in w.stream(
            custom.list_namespaced_custom_object,
            *args,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=max(1, int(left)),
        ):
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            if event["type"] != "DELETED" and check(obj):
                w.stop()
                return obj
    pytest.fail(
        f"session {namespace}/{name}: timed out after {timeout:.0f}s waiting for {what}; status: {obj.get('status')}"
    )


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (s.get("status") or {}).get("phase") in phases


def reason_is(*reasons: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (s.get("status") or {}).get("reason") in reasons
