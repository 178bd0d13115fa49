"""`helm install` of the chart into the local cluster: the operator and gateway run as pods
(as local processes, with their service accounts' real tokens, so RBAC applies to them)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubesessions.localcluster import binaries

from ..conftest import Cluster, await_condition, await_pod, await_session, phase_is

pytestmark = pytest.mark.cluster
REPO = Path(__file__).parent.parent.parent
CHART = REPO / "charts" / "kube-sessions"


def helm(kube: Cluster, *args: str) -> str:
    exe = binaries.find_binary("helm")
    assert exe is not None, "helm not found: run `make binaries`"
    out = subprocess.run(
        [str(exe), f"--kubeconfig={kube.kubeconfig}", *args], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture
def release(kube: Cluster, namespace: str, crds: None) -> Iterator[str]:
    values = [
        "image.tag=0.1.0",
        f"watchNamespaces={{{namespace}}}",
        "crds.enabled=false",
        "gateway.replicas=1",
        "gateway.host=$(POD_IP)",  # the process node's pods share the machine's network
        "gateway.auth=kubernetes",
        "operator.retention=30",
    ]
    install(kube, "ks", namespace, values)
    yield "ks"
    uninstall(kube, "ks", namespace)


def install(kube: Cluster, release: str, namespace: str, values: list[str]) -> None:
    sets = (a for v in values for a in ("--set", v))
    helm(kube, "install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "120s", *sets)


def uninstall(kube: Cluster, release: str, namespace: str) -> None:
    """Best effort, for clean-up: the release may be gone already."""
    subprocess.run(
        [
            str(binaries.find_binary("helm")),
            f"--kubeconfig={kube.kubeconfig}",
            "uninstall",
            release,
            "-n",
            namespace,
            "--ignore-not-found",
            "--wait",
        ],
        capture_output=True,
        timeout=120,
    )


def lease_holder(kube: Cluster, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(kube.api).read_namespaced_lease("kube-sessions-operator", namespace)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
    return str(lease.spec.holder_identity or "") or None


def caller_token(kube: Cluster, namespace: str) -> str:
    """A service account allowed to create Sessions in ``namespace``, and its token."""
    rbac = client.RbacAuthorizationV1Api(kube.api)
    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "caller"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "caller"},
            "rules": [
                {
                    "apiGroups": ["kubesessions.io"],
                    "resources": ["sessions"],
                    "verbs": ["create", "get", "list"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "caller"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "caller"},
            "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": namespace}],
        },
    )
    request = kube.core.create_namespaced_service_account_token(
        "caller", namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return str(request.status.token)


def test_install_upgrade_uninstall(kube: Cluster, namespace: str, release: str) -> None:
    pods = kube.core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=ks").items
    assert {p.metadata.labels["app.kubernetes.io/component"] for p in pods} == {"operator", "gateway"}
    assert all(ready(p) for p in pods)
    # Two operator replicas, one of them leading through the Lease.
    operators = {
        p.metadata.name for p in pods if p.metadata.labels["app.kubernetes.io/component"] == "operator"
    }
    assert len(operators) == 2
    await_condition(
        lambda: lease_holder(kube, namespace) in operators,
        timeout=30,
        what="an operator pod to hold the kube-sessions-operator Lease",
    )
    # A Session applied with kubectl becomes Ready under the installed operator.
    app = yaml.safe_load((REPO / "examples" / "app-counter.yaml").read_text())
    session = {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "via-helm"},
        "spec": {"app": "counter", "sessionTimeout": 600},
    }
    applied = subprocess.run(
        [str(kube.kubectl), f"--kubeconfig={kube.kubeconfig}", "apply", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump_all([app, session]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    await_session(
        kube, namespace, "via-helm", phase_is("Ready"), 60, "Ready under the helm-installed operator"
    )
    worker_uid = kube.core.read_namespaced_pod("via-helm", namespace).metadata.uid
    # A call through the installed gateway, authenticated as a service account with RBAC.
    gateway = next(p for p in pods if p.metadata.labels["app.kubernetes.io/component"] == "gateway")
    body = json.dumps({"app": "counter", "input": {"add": 2}, "session": "via-helm"}).encode()
    request = urllib.request.Request(
        f"http://{gateway.status.pod_ip}:8080/v1/run?namespace={namespace}",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {caller_token(kube, namespace)}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer = json.loads(resp.read())
    assert answer["session_id"] == "via-helm"
    assert answer["output"]["total"] == 2
    # helm upgrade changes a value without losing the session.
    helm(
        kube,
        "upgrade",
        "ks",
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "operator.retention=60",
        "--wait",
        "--timeout",
        "120s",
    )
    operator = next(
        p
        for p in kube.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        if not p.metadata.deletion_timestamp
    )
    assert "60" in operator.spec.containers[0].args
    await_pod(kube, namespace, operator.metadata.name, ready, 60, "the upgraded operator Ready")
    assert kube.core.read_namespaced_pod("via-helm", namespace).metadata.uid == worker_uid
    assert (
        await_session(kube, namespace, "via-helm", phase_is("Ready"), 10, "still Ready")["status"]["phase"]
        == "Ready"
    )
    # helm uninstall leaves none of the chart's objects (the CRDs are kept on purpose).
    helm(kube, "uninstall", "ks", "-n", namespace, "--wait")
    selector = "app.kubernetes.io/instance=ks"
    await_condition(
        lambda: not kube.core.list_namespaced_pod(namespace, label_selector=selector).items,
        60,
        "the chart's pods to go",
    )
    assert not kube.core.list_namespaced_service_account(namespace, label_selector=selector).items
    assert (
        not client.RbacAuthorizationV1Api(kube.api)
        .list_namespaced_role(namespace, label_selector=selector)
        .items
    )
    assert client.ApiextensionsV1Api(kube.api).read_custom_resource_definition("sessions.kubesessions.io")


def test_smoke_script_passes_against_the_installed_release(
    kube: Cluster, namespace: str, release: str
) -> None:
    gateway = kube.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=gateway"
    ).items[0]
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "smoke_test.py"),
            "--gateway",
            f"http://{gateway.status.pod_ip}:8080",
            "--namespace",
            namespace,
            "--kubeconfig",
            str(kube.kubeconfig),
            "--kubectl",
            str(kube.kubectl),
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "smoke: OK" in out.stdout


def test_default_install_isolates_workers_with_a_network_policy(
    kube: Cluster, namespace: str, crds: None
) -> None:
    # Default values (every namespace served). The process node cannot enforce NetworkPolicy:
    # this shows the object the operator keeps and that its selectors name the chart's own
    # gateway and operator pods; enforcement needs a node whose network plugin applies it.
    # gateway.host: the process node's pods share the machine's network (see the release fixture).
    values = ["image.tag=0.1.0", "crds.enabled=false", "gateway.replicas=1", "gateway.host=$(POD_IP)"]
    install(kube, "ksnp", namespace, values)
    try:
        body = yaml.safe_load((REPO / "examples" / "app-counter.yaml").read_text())
        client.CustomObjectsApi(kube.api).create_namespaced_custom_object(
            "kubesessions.io", "v1alpha1", namespace, "apps", body
        )
        session = {"apiVersion": "kubesessions.io/v1alpha1", "kind": "Session", "metadata": {"name": "np"}}
        client.CustomObjectsApi(kube.api).create_namespaced_custom_object(
            "kubesessions.io", "v1alpha1", namespace, "sessions", {**session, "spec": {"app": "counter"}}
        )
        await_session(kube, namespace, "np", phase_is("Ready"), 60, "Ready under the default install")
        policy = client.NetworkingV1Api(kube.api).read_namespaced_network_policy(
            "kube-sessions-workers", namespace
        )
        worker = kube.core.read_namespaced_pod("np", namespace)
        selected = policy.spec.pod_selector.match_labels
        assert selected.items() <= worker.metadata.labels.items()
        assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
        [rule] = policy.spec.ingress
        assert [(p.port, p.protocol) for p in rule.ports] == [(8080, "TCP")]
        peers, clients = rule._from
        assert peers.namespace_selector.match_labels == {"kubernetes.io/metadata.name": namespace}
        assert clients.pod_selector.match_labels == {"kubesessions.io/client": "true"}
        # The peers are exactly the release's gateway and operator pods.
        chart_pods = kube.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/instance=ksnp"
        )
        let_in = [
            p.metadata.labels["app.kubernetes.io/component"]
            for p in chart_pods.items
            if peers.pod_selector.match_labels.items() <= p.metadata.labels.items()
            and p.metadata.labels.get("app.kubernetes.io/component")
            in peers.pod_selector.match_expressions[0].values
        ]
        assert sorted(set(let_in)) == ["gateway", "operator"]  # each replica of both
        assert not worker.metadata.labels.get(
            "app.kubernetes.io/component"
        )  # workers do not let each other in
    finally:
        uninstall(kube, "ksnp", namespace)
