"""The chart's RBAC, applied to the local cluster and checked with `kubectl auth can-i`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubesessions.localcluster import binaries

from ..conftest import Cluster, await_condition

pytestmark = pytest.mark.cluster
CHART = Path(__file__).parent.parent.parent / "charts" / "kube-sessions"
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def kubectl(kube: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kube.kubectl), f"--kubeconfig={kube.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def release(kube: Cluster, namespace: str, crds: None) -> Iterator[str]:
    """The chart's ServiceAccounts and RBAC for a release in ``namespace`` serving ``namespace``."""
    helm = binaries.find_binary("helm")
    assert helm is not None, "helm not found: run `make binaries`"
    name = f"r{namespace[2:]}"
    out = subprocess.run(
        [
            str(helm),
            "template",
            name,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "image.tag=0.1.0",
            "--set",
            f"watchNamespaces={{{namespace}}}",
            "--set",
            "crds.enabled=false",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in RBAC_KINDS]
    applied = kubectl(kube, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    yield name
    cluster_scoped = [d for d in docs if d["kind"].startswith("Cluster")]
    kubectl(kube, "delete", "-f", "-", "--ignore-not-found", stdin=yaml.safe_dump_all(cluster_scoped))


def can(kube: Cluster, who: str, namespace: str, verb: str, resource: str, where: str | None) -> bool:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{namespace}:{who}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", where] if where else []
    return kubectl(kube, *args).stdout.strip() == "yes"


@pytest.mark.parametrize(
    ("component", "verb", "resource", "elsewhere", "allowed"),
    [
        ("operator", "create", "pods", False, True),
        ("operator", "delete", "pods", False, True),
        ("operator", "patch", "sessions.kubesessions.io/status", False, True),
        ("operator", "watch", "apps.kubesessions.io", False, True),
        ("operator", "patch", "apps.kubesessions.io/status", False, True),  # the warm pool's status
        ("operator", "update", "apps.kubesessions.io", False, False),  # the pool size is the user's
        ("operator", "create", "secrets", False, True),
        ("operator", "create", "events", False, True),
        ("operator", "patch", "networkpolicies.networking.k8s.io", False, True),  # the workers' policy
        ("operator", "create", "networkpolicies.networking.k8s.io", False, True),
        ("operator", "delete", "networkpolicies.networking.k8s.io", False, False),
        ("operator", "get", "secrets", True, False),  # not in namespaces it does not serve
        ("operator", "create", "pods", True, False),
        ("operator", "update", "sessions.kubesessions.io", False, False),  # spec is the user's
        ("gateway", "create", "sessions.kubesessions.io", False, True),
        ("gateway", "create", "tokenreviews.authentication.k8s.io", None, True),
        ("gateway", "create", "subjectaccessreviews.authorization.k8s.io", None, True),
        ("gateway", "create", "pods", False, False),
        ("gateway", "delete", "sessions.kubesessions.io", False, False),
        ("gateway", "patch", "networkpolicies.networking.k8s.io", False, False),
    ],
)
def test_least_privilege(
    kube: Cluster,
    namespace: str,
    release: str,
    component: str,
    verb: str,
    resource: str,
    elsewhere: bool | None,
    allowed: bool,
) -> None:
    where = None if elsewhere is None else ("default" if elsewhere else namespace)
    sa = f"{release}-kube-sessions-{component}"
    if allowed:
        # The API server's RBAC cache learns of the new Roles a moment after they are created.
        await_condition(
            lambda: can(kube, sa, namespace, verb, resource, where),
            15,
            f"{component} to be allowed to {verb} {resource}",
        )
    else:
        assert not can(kube, sa, namespace, verb, resource, where)


@pytest.mark.parametrize("resource", ["nodes", "namespaces", "clusterroles", "customresourcedefinitions"])
@pytest.mark.parametrize("component", ["operator", "gateway"])
def test_no_cluster_scoped_business(
    kube: Cluster, namespace: str, release: str, component: str, resource: str
) -> None:
    sa = f"{release}-kube-sessions-{component}"
    for verb in ("get", "list", "create", "delete"):
        assert not can(kube, sa, namespace, verb, resource, None), f"{component} may {verb} {resource}"
