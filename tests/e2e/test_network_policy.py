"""The workers' NetworkPolicy (`kube-sessions-workers`, kept by the operator the chart installs)
enforced on the kubelet node by kube-router's policy controller: who may call a worker, where a
worker may connect, and what a restart of the engine does.

Probes are `python3 -c` in pods of the worker image (it exists on the node) under the
`restricted` Pod Security standard; the node's address stands in for "outside": a listener the
test opens there is reachable from pods the policy does not select, so a refusal is the policy's.
The kubelet node runs no cluster DNS (no CoreDNS; the kubelet has no clusterDNS), so "DNS still
resolves" is shown as what the policy allows: port 53, TCP and UDP, to a listener on the node.
"""

from __future__ import annotations

import json
import socketserver
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kubesessions.api.names import APP_LABEL, WORKER_POLICY
from kubesessions.gateway.forward import sse_events
from kubesessions.localcluster import cluster, images, kubeletnode
from kubesessions.localcluster.nodeconfig import WORKER_IMAGE

from ..cluster.conftest import service_account_token
from ..conftest import Cluster, await_condition
from .conftest import RELEASE, Release
from .test_containers import new_session

pytestmark = pytest.mark.e2e

OUTSIDE = "np-outside"  # another namespace
CLIENT_LABEL = {"kubesessions.io/client": "true"}
NODE_IP = kubeletnode.NETWORK.gateway
KUBERNETES_SERVICE = ("10.96.0.1", 443)
# Exit 0: connected; 3: refused, timed out or unreachable (what a policy's REJECT or DROP gives).
CONNECT = """
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(b"ping", (host, port))
        assert s.recv(16) == b"ping"
    else:
        socket.create_connection((host, port), timeout=3).close()
except OSError as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
"""


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    container: str | None = None


@dataclass
class Net:
    release: Release
    workers: list[Pod]
    worker_ips: list[str]
    stranger: Pod  # the sessions namespace, no client label
    outsider: Pod  # another namespace, with the client label
    client: Pod  # the sessions namespace, with the client label
    node_port: int  # a TCP listener on the node, outside the allow-list

    def connects(self, pod: Pod, host: str, port: int, proto: str = "tcp") -> bool:
        container = ["-c", pod.container] if pod.container else []
        proc = subprocess.run(
            [
                str(self.release.kube.kubectl),
                f"--kubeconfig={self.release.kube.kubeconfig}",
                "-n",
                pod.namespace,
                "exec",
                pod.name,
                *container,
                "--",
                "python3",
                "-c",
                CONNECT,
                host,
                str(port),
                proto,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode not in (0, 3):
            pytest.fail(f"probe from {pod} failed to run: {proc.stdout}{proc.stderr}")
        return proc.returncode == 0


def probe_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod that sleeps, for `kubectl exec` probes; fit for the restricted standard."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": f"{WORKER_IMAGE}:{images.TAG}",
                    "command": ["python3", "-c", "import time; time.sleep(86400)"],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _Accept(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.close()


@pytest.fixture(scope="module")
def node_listeners(kube: Cluster) -> Iterator[int]:
    """On the node's address (the bridge `kube` made): TCP and UDP 53 (DNS, allowed) and a
    free TCP port (not)."""
    servers: list[socketserver.BaseServer] = [
        socketserver.ThreadingTCPServer((NODE_IP, 53), _Accept),
        socketserver.ThreadingUDPServer((NODE_IP, 53), _Echo),
        socketserver.ThreadingTCPServer((NODE_IP, 0), _Accept),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield servers[-1].server_address[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def net(release: Release, node_listeners: int) -> Iterator[Net]:
    kubectl = release.kubectl
    release.kube.core.create_namespace({"metadata": {"name": OUTSIDE}})
    suffix = uuid.uuid4().hex[:5]
    pods = {
        "stranger": Pod(release.namespace, f"stranger-{suffix}"),
        "client": Pod(release.namespace, f"client-{suffix}"),
        "outsider": Pod(OUTSIDE, f"outsider-{suffix}"),
    }
    for role, pod in pods.items():
        body = probe_pod(pod.name, {} if role == "stranger" else CLIENT_LABEL)
        subprocess.run(
            [
                str(release.kube.kubectl),
                f"--kubeconfig={release.kube.kubeconfig}",
                "-n",
                pod.namespace,
                "apply",
                "-f",
                "-",
            ],
            input=json.dumps(body),
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    sessions = [new_session(release), new_session(release)]
    for pod in pods.values():
        await_condition(
            lambda pod=pod: _ready(release, pod),
            timeout=120,
            what=f"probe pod {pod.namespace}/{pod.name} Ready",
        )
    kubectl("get", "networkpolicy", WORKER_POLICY)  # the operator made it with the first worker
    ips = [release.kube.core.read_namespaced_pod(name, release.namespace).status.pod_ip for name in sessions]
    try:
        yield Net(
            release,
            [Pod(release.namespace, name, "worker") for name in sessions],
            ips,
            pods["stranger"],
            pods["outsider"],
            pods["client"],
            node_listeners,
        )
    finally:
        for name in sessions:
            kubectl("delete", "session", name, "--wait=false", check=False)
        kubectl("delete", "pod", pods["stranger"].name, pods["client"].name, "--wait=false", check=False)
        release.kube.core.delete_namespace(OUTSIDE)


def _ready(release: Release, pod: Pod) -> bool:
    status = release.kube.core.read_namespaced_pod(pod.name, pod.namespace).status
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _state_dir(release: Release) -> cluster.StateDir:
    assert release.kube.state_dir is not None  # the e2e fixture starts its own cluster
    return release.kube.state_dir


def _component_pods(release: Release, component: str) -> list[Pod]:
    names = release.kubectl(
        "get",
        "pods",
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ).split()
    assert names, f"no {component} pods"
    return [Pod(release.namespace, name, component) for name in names]


def test_strangers_cannot_reach_a_worker(net: Net) -> None:
    worker = net.worker_ips[0]
    assert not net.connects(net.stranger, worker, 8080), "a pod without the client label reached a worker"
    assert not net.connects(net.outsider, worker, 8080), (
        "a labelled pod of another namespace reached a worker"
    )


def test_the_gateway_the_operator_and_a_labelled_client_reach_a_worker(net: Net) -> None:
    worker = net.worker_ips[0]
    assert net.connects(net.client, worker, 8080)
    for pod in [*_component_pods(net.release, "gateway"), *_component_pods(net.release, "operator")]:
        assert net.connects(pod, worker, 8080), f"{pod.name} could not reach a worker"


def test_a_worker_reaches_only_dns(net: Net, release: Release) -> None:
    worker, other = net.workers[0], net.worker_ips[1]
    state = _state_dir(release).load()
    assert state is not None
    apiserver_on_node = (NODE_IP, state.ports["apiserver"])
    # The targets are there: a pod the policy does not select reaches them all.
    for host, port in (KUBERNETES_SERVICE, apiserver_on_node, (NODE_IP, net.node_port)):
        assert net.connects(net.client, host, port), f"control: the client pod could not reach {host}:{port}"
    assert not net.connects(worker, other, 8080), "a worker reached another worker"
    assert not net.connects(worker, *KUBERNETES_SERVICE), "a worker reached the API server's Service"
    assert not net.connects(worker, *apiserver_on_node), "a worker reached the API server on the node"
    assert not net.connects(worker, NODE_IP, net.node_port), "a worker reached a port outside the allow-list"
    assert net.connects(worker, NODE_IP, 53, "tcp"), "DNS over TCP is allowed, but was refused"
    assert net.connects(worker, NODE_IP, 53, "udp"), "DNS over UDP is allowed, but got no answer"


def test_an_app_given_its_own_egress_policy_reaches_the_api_server(net: Net, release: Release) -> None:
    """Policies add up: a NetworkPolicy of the user's, selecting one App's workers by their
    app label, lets those (and no other) reach the API server, at its address after kube-proxy's
    translation of the `kubernetes` Service."""
    state = _state_dir(release).load()
    assert state is not None
    port = state.ports["apiserver"]
    worker = net.workers[0]
    assert not net.connects(worker, *KUBERNETES_SERVICE)
    api_egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "counter-api"},
        "spec": {
            "podSelector": {"matchLabels": {APP_LABEL: "counter"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": f"{NODE_IP}/32"}}], "ports": [{"port": port, "protocol": "TCP"}]}
            ],
        },
    }
    release.kubectl("apply", "-f", "-", stdin=json.dumps(api_egress))
    try:
        await_condition(
            lambda: net.connects(worker, *KUBERNETES_SERVICE),
            timeout=30,
            what="the counter worker to reach the API server once its App's policy allows it",
            every=0.5,
        )
        assert net.connects(worker, NODE_IP, port)
        assert not net.connects(worker, NODE_IP, net.node_port), "the App's policy opened more than the API"
    finally:
        release.kubectl("delete", "networkpolicy", "counter-api")
    await_condition(
        lambda: not net.connects(worker, *KUBERNETES_SERVICE),
        timeout=30,
        what="the API server to be closed again once the App's policy is gone",
        every=0.5,
    )


def test_an_engine_restart_keeps_policies_and_cuts_no_call(net: Net, release: Release) -> None:
    token = service_account_token(release.kube, release.namespace, f"np-{uuid.uuid4().hex[:6]}", allowed=True)
    words = [f"w{i}" for i in range(12)]
    body = {
        "app": "stream",
        "input": {"text": " ".join(words), "delay": 1.0},
        "session": "new",
        "stream": True,
    }
    request = urllib.request.Request(
        f"{release.url}/v1/run?namespace={release.namespace}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=180) as response:
        lines: list[bytes] = []
        while not any(line.startswith(b"event: output") for line in lines):  # the first word is here
            lines.append(response.readline())
            assert lines[-1], f"the stream ended before its first word: {lines}"
        log = _state_dir(release).logs / f"{kubeletnode.POLICY_ENGINE}.log"
        offset = log.stat().st_size
        restarted = time.monotonic()
        cluster.restart_process(_state_dir(release), kubeletnode.POLICY_ENGINE)
        # From the restart until the new engine has synced, and once more after: never through.
        probes = []
        synced_at = None
        while synced_at is None or len([t for t in probes if t > synced_at]) < 2:
            probes.append(time.monotonic() - restarted)
            assert not net.connects(net.stranger, net.worker_ips[0], 8080), (
                f"a stranger reached a worker {probes[-1]:.1f}s after the engine's restart"
            )
            if synced_at is None and kubeletnode.policy_engine_synced(log, offset):
                synced_at = time.monotonic() - restarted
            assert time.monotonic() - restarted < 90, "the restarted engine did not sync within 90 s"
        assert probes[0] < 5, f"the first probe after the restart came {probes[0]:.1f}s after it"
        print(f"[e2e] kube-router restarted: synced after {synced_at:.1f}s; probes at {probes}")
        lines += response.read().splitlines(keepends=True)
    events = list(sse_events(lines))
    assert not [data for event, data in events if event == "error"], events
    assert [json.loads(data) for event, data in events if event == "output"] == words
    assert [event for event, _ in events][-1] == "done"


def test_without_the_policy_a_stranger_gets_through(net: Net, release: Release) -> None:
    """Last: the policy removed (the operator applies it once per namespace and does not
    watch it), then put back as it was."""
    saved = json.loads(release.kubectl("get", "networkpolicy", WORKER_POLICY, "-o", "json"))
    release.kubectl("delete", "networkpolicy", WORKER_POLICY)
    try:
        await_condition(
            lambda: net.connects(net.stranger, net.worker_ips[0], 8080),
            timeout=30,
            what="the stranger to get through once the policy is gone",
            every=0.5,
        )
        assert net.connects(net.outsider, net.worker_ips[0], 8080)
    finally:
        for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            saved["metadata"].pop(field, None)
        release.kubectl("create", "-f", "-", stdin=json.dumps(saved))
    await_condition(
        lambda: not net.connects(net.stranger, net.worker_ips[0], 8080),
        timeout=30,
        what="the stranger to be refused again once the policy is back",
        every=0.5,
    )
