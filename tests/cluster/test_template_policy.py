"""Defect 1 of issue 25: "may create sessions" must not mean "may run any image, read any Secret".

The admission policy in crds/ (installed with the CRDs) makes the API server refuse a Session
whose template names an image, a Secret, ConfigMap or PersistentVolumeClaim (env, volume, pull
secret), a ServiceAccount (or asks for its token), a node or a toleration, unless the user
creating it holds the verb `override-template` on sessions; a caller with only the README's
`session-caller` Role gets a message that says why. The API server answers, no operator runs.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubesessions.api.models import TEMPLATE_VERB

from ..conftest import Cluster, await_condition

pytestmark = pytest.mark.cluster
CALLER_VERBS = ["create", "get", "list", "delete", "patch"]  # the README's session-caller Role


def kubectl(kube: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return kube.run_kubectl(*args, stdin=stdin)


def grant(kube: Cluster, namespace: str, name: str, verbs: list[str], who: str) -> None:
    rbac = client.RbacAuthorizationV1Api(kube.api)
    rule = {"apiGroups": ["kubesessions.io"], "resources": ["sessions"], "verbs": verbs}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": [rule]})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": namespace}],
        },
    )


def can(kube: Cluster, user: str, namespace: str, verb: str, resource: str) -> bool:
    out = kubectl(kube, "auth", "can-i", verb, resource, f"--as={user}", "-n", namespace)
    return out.stdout.strip() == "yes"


@pytest.fixture
def caller(kube: Cluster, namespace: str, crds: None) -> str:
    """A ServiceAccount with only the README's session-caller Role; its user name."""
    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "caller"}})
    grant(kube, namespace, "session-caller", CALLER_VERBS, "caller")
    user = f"system:serviceaccount:{namespace}:caller"
    await_condition(lambda: can(kube, user, namespace, "create", "sessions.kubesessions.io"), 15, "RBAC")
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}}
    )
    return user


def session(name: str, **template: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"app": "counter", "sessionTimeout": 60}
    if template:
        spec["template"] = template
    return {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_as(
    kube: Cluster, user: str, namespace: str, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return kubectl(kube, "create", "-n", namespace, f"--as={user}", "-f", "-", stdin=yaml.safe_dump(body))


READS_THE_SECRET = {"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}
ESCALATIONS = {
    "secret": (READS_THE_SECRET, "env from a Secret or ConfigMap"),
    "image": ({"image": "registry.example/anything:1"}, "image"),
    "node": ({"nodeSelector": {"kubernetes.io/hostname": "control"}}, "nodeSelector"),
    "toleration": ({"tolerations": [{"operator": "Exists"}]}, "tolerations"),
    "secret-volume": (
        {"volumes": [{"name": "db", "secret": {"secretName": "db"}}]},
        "a volume of a Secret, ConfigMap or PersistentVolumeClaim",
    ),
    "claim-volume": (
        {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "someones-data"}}]},
        "a volume of a Secret, ConfigMap or PersistentVolumeClaim",
    ),
    "pull-secret": ({"imagePullSecrets": [{"name": "db"}]}, "imagePullSecrets"),
    "service-account": ({"serviceAccountName": "admin"}, "serviceAccountName"),
    "account-token": ({"automountServiceAccountToken": True}, "automountServiceAccountToken"),
}


@pytest.mark.parametrize("case", list(ESCALATIONS))
def test_the_caller_role_cannot_name_an_image_secret_node_or_toleration(
    kube: Cluster, namespace: str, caller: str, case: str
) -> None:
    template, what = ESCALATIONS[case]
    assert not can(kube, caller, namespace, "get", "secrets"), "the caller reads no Secret by itself"
    refused = create_as(kube, caller, namespace, session(f"s-{case}", **template))
    assert refused.returncode != 0, f"a Session with {template} was admitted"
    assert f"spec.template sets {what}: {caller} may not" in refused.stderr, refused.stderr
    assert f'needs the verb "{TEMPLATE_VERB}" on sessions.kubesessions.io' in refused.stderr


def test_plain_sessions_and_app_level_overrides_are_admitted(
    kube: Cluster, namespace: str, caller: str
) -> None:
    assert create_as(kube, caller, namespace, session("plain")).returncode == 0
    # Resources and the entrypoint name no image, Secret or node: the App decides on them.
    # Nor do an emptyDir (shared memory), its mount, a setup timeout or a scratch size.
    tuned = session(
        "tuned",
        resources={"gpu": 1},
        entrypoint="pkg.mod:Other",
        env=[{"name": "A", "value": "1"}],
        volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}],
        volumeMounts=[{"name": "shm", "mountPath": "/dev/shm"}],
        setupTimeout=1200,
        scratchSize="2Gi",
        automountServiceAccountToken=False,
    )
    created = create_as(kube, caller, namespace, tuned)
    assert created.returncode == 0, created.stderr


def test_the_extra_right_admits_it_and_later_annotations_need_none(
    kube: Cluster, namespace: str, caller: str
) -> None:
    grant(kube, namespace, "session-template", [TEMPLATE_VERB], "caller")
    await_condition(
        lambda: can(kube, caller, namespace, TEMPLATE_VERB, "sessions.kubesessions.io"), 15, "the extra right"
    )
    privileged = session("mounts-db", image="registry.example/anything:1", **READS_THE_SECRET)
    created = create_as(kube, caller, namespace, privileged)
    assert created.returncode == 0, created.stderr
    # A close (the gateway's annotation) by someone without the right is an update that leaves
    # the template alone: admitted.
    rbac = client.RbacAuthorizationV1Api(kube.api)
    rbac.delete_namespaced_role_binding("session-template", namespace)
    await_condition(
        lambda: not can(kube, caller, namespace, TEMPLATE_VERB, "sessions.kubesessions.io"), 15, "revoked"
    )
    closed = kubectl(
        kube,
        "annotate",
        "session",
        "mounts-db",
        "kubesessions.io/close=done",
        "-n",
        namespace,
        f"--as={caller}",
    )
    assert closed.returncode == 0, closed.stderr
