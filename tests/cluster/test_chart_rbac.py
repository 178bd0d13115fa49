"""The chart's RBAC, applied to the local cluster and checked with `kubectl auth can-i`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesessions.localcluster import binaries

from ..conftest import Cluster, await_condition

pytestmark = pytest.mark.cluster
CHART = Path(__file__).parent.parent.parent / "charts" / "kube-sessions"
RBAC_KINDS = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def kubectl(kube: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return kube.run_kubectl(*args, stdin=stdin)


def apply_release(kube: Cluster, namespace: str, *sets: str) -> tuple[str, list[dict[str, Any]]]:
    """The chart's ServiceAccounts, RBAC and admission policies for a release in ``namespace``
    (its name and the documents applied)."""
    helm = binaries.find_binary("helm")
    assert helm is not None, "helm not found: run `make binaries`"
    name = f"r{namespace[2:]}"
    values = ["image.tag=0.1.0", "crds.enabled=false", *sets]
    out = subprocess.run(
        [str(helm), "template", name, str(CHART), "--namespace", namespace, *(f"--set={v}" for v in values)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in RBAC_KINDS]
    applied = kubectl(kube, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    return name, docs


def delete_cluster_scoped(kube: Cluster, docs: list[dict[str, Any]]) -> None:
    cluster_scoped = [d for d in docs if "namespace" not in d["metadata"]]
    kubectl(kube, "delete", "-f", "-", "--ignore-not-found", stdin=yaml.safe_dump_all(cluster_scoped))


@pytest.fixture
def release(kube: Cluster, namespace: str, crds: None) -> Iterator[str]:
    """A release in ``namespace`` serving ``namespace``."""
    name, docs = apply_release(kube, namespace, f"watchNamespaces={{{namespace}}}")
    yield name
    delete_cluster_scoped(kube, docs)


@pytest.fixture
def cluster_release(kube: Cluster, namespace: str, crds: None) -> Iterator[str]:
    """A release in ``namespace`` serving every namespace (the default, ClusterRoles)."""
    name, docs = apply_release(kube, namespace)
    yield name
    delete_cluster_scoped(kube, docs)


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
        # Issue 25, defect 9: the gateway derives session tokens and reads no Secret.
        ("gateway", "get", "secrets", False, False),
        ("gateway", "list", "secrets", False, False),
        ("gateway", "watch", "secrets", False, False),
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


def secret(name: str, labelled: bool) -> str:
    labels = {"app.kubernetes.io/managed-by": "kube-sessions"} if labelled else {}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels}}
    return yaml.safe_dump({**body, "stringData": {"k": "v"}})


def test_the_operator_writes_only_objects_labelled_its_own(
    kube: Cluster, namespace: str, cluster_release: str
) -> None:
    """Issue 25, defect 9: RBAC let the operator delete any pod or Secret in the cluster; the
    chart's admission policy narrows its writes to objects labelled managed-by kube-sessions."""
    operator = f"--as=system:serviceaccount:{namespace}:{cluster_release}-kube-sessions-operator"
    kube.core.create_namespaced_secret("default", {"metadata": {"name": f"users-{namespace}"}})
    try:
        await_condition(
            lambda: can(
                kube, f"{cluster_release}-kube-sessions-operator", namespace, "delete", "secrets", "default"
            ),
            15,
            "the operator's ClusterRole to take effect",
        )
        # The policy takes effect a moment after it is created: await its first refusal.
        delete = ("delete", "secret", f"users-{namespace}", "-n", "default", operator, "--dry-run=server")
        await_condition(lambda: kubectl(kube, *delete).returncode != 0, 15, "the policy to refuse")
        refused = kubectl(kube, *delete)
        assert "the kube-sessions operator writes only objects labelled" in refused.stderr, refused.stderr
        assert f"DELETE of secrets default/users-{namespace} refused" in refused.stderr
        unlabelled = kubectl(
            kube, "create", "-n", "default", operator, "-f", "-", stdin=secret(f"x-{namespace}", False)
        )
        assert unlabelled.returncode != 0 and "refused" in unlabelled.stderr, unlabelled.stderr
        labelled = kubectl(
            kube, "create", "-n", "default", operator, "-f", "-", stdin=secret(f"o-{namespace}", True)
        )
        assert labelled.returncode == 0, labelled.stderr
        # Taking the label off (to keep the object past the policy) is refused too.
        relabel = kubectl(
            kube,
            "label",
            "secret",
            f"o-{namespace}",
            "app.kubernetes.io/managed-by-",
            "-n",
            "default",
            operator,
        )
        assert relabel.returncode != 0, relabel.stderr
        gone = kubectl(kube, "delete", "secret", f"o-{namespace}", "-n", "default", operator)
        assert gone.returncode == 0, gone.stderr
    finally:
        kube.core.delete_namespaced_secret(f"users-{namespace}", "default")


README = Path(__file__).parent.parent.parent / "README.md"


def rights(kube: Cluster, namespace: str, sa: str, where: str) -> str:
    """`kubectl auth can-i --list` for a ServiceAccount in ``where``: its resource rows (not the
    discovery URLs every account may read), sorted (kubectl lists them in no fixed order),
    columns re-aligned, as the README quotes them."""
    listed = kubectl(
        kube, "auth", "can-i", "--list", f"--as=system:serviceaccount:{namespace}:{sa}", "-n", where
    )
    assert listed.returncode == 0, listed.stderr
    rows = []
    for line in listed.stdout.splitlines()[1:]:
        if line.startswith(" "):
            continue  # a non-resource URL
        resource, _urls, names, verbs = line.split(None, 3)
        rows.append(f"{resource:<48} {names:<15} {verbs}")
    return "\n".join([f"{'RESOURCE':<48} {'RESOURCE NAMES':<15} VERBS", *sorted(rows)]) + "\n"


@pytest.mark.parametrize("component", ["gateway", "operator"])
def test_the_readme_shows_each_service_accounts_rights(
    kube: Cluster, namespace: str, cluster_release: str, component: str
) -> None:
    """Issue 25, defect 9: the rights of the default install (every namespace served) in a
    namespace it serves, as the README's security section quotes them: the gateway no Secret."""
    sa = f"{cluster_release}-kube-sessions-{component}"
    await_condition(
        lambda: "sessions.kubesessions.io" in rights(kube, namespace, sa, "default"), 15, "the ClusterRole"
    )
    listed = rights(kube, namespace, sa, "default")
    if component == "gateway":
        assert "secrets" not in listed
    assert listed in README.read_text(), (
        f"README.md's security section should quote, for the {component}:\n{listed}"
    )
