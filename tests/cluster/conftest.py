"""Gateway fixtures: `kubesessions gateway` as a real process, the example Apps, callers with tokens."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kubesessions.common.timefmt import parse_rfc3339

from ..conftest import REPO, Cluster, OperatorProcess, ServiceProcess

GROUP = ("kubesessions.io", "v1alpha1")


class GatewayProcess(ServiceProcess):
    """`kubesessions gateway` serving one namespace, with the test kubeconfig (admin) as its identity."""

    command = "gateway"
    health_path = "/readyz"

    def flags(self) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port), "--start-timeout", "30"]


def apply_example_apps(kube: Cluster, namespace: str) -> None:
    custom = client.CustomObjectsApi(kube.api)
    for path in ("app-counter.yaml", "apps.yaml"):
        for body in yaml.safe_load_all((REPO / "examples" / path).read_text()):
            custom.create_namespaced_custom_object(*GROUP, namespace, "apps", body)


@pytest.fixture
def apps(kube: Cluster, namespace: str, crds: None) -> None:
    apply_example_apps(kube, namespace)


@pytest.fixture
def gateway(
    kube: Cluster, namespace: str, apps: None, operator: OperatorProcess, tmp_path: Path
) -> Iterator[GatewayProcess]:
    """Operator and gateway for this test's namespace, the example Apps applied."""
    gw = GatewayProcess(kube, namespace, tmp_path).start()
    yield gw
    gw.stop()


# What a caller of the gateway needs, as the README's Role example grants it.
CALLER_VERBS = ("create", "get", "list", "delete", "patch")


def service_account_token(
    kube: Cluster,
    namespace: str,
    name: str,
    allowed: bool,
    verbs: Sequence[str] = CALLER_VERBS,
    also_in: Sequence[str] = (),
) -> str:
    """A ServiceAccount's token (TokenRequest); ``allowed`` binds a Role granting ``verbs`` on
    sessions, in ``namespace`` and in each of ``also_in``."""
    core, rbac = kube.core, client.RbacAuthorizationV1Api(kube.api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    for where in (namespace, *also_in) if allowed else ():
        rbac.create_namespaced_role(
            where,
            {
                "metadata": {"name": f"{name}-sessions"},
                "rules": [
                    {"apiGroups": ["kubesessions.io"], "resources": ["sessions"], "verbs": list(verbs)}
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            where,
            {
                "metadata": {"name": f"{name}-sessions"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": f"{name}-sessions",
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    token: str = request.status.token
    return token


def seconds_between(earlier: str | None, later: str | None) -> float:
    """Seconds from one RFC 3339 time to another."""
    start, end = parse_rfc3339(earlier), parse_rfc3339(later)
    assert start is not None and end is not None, (earlier, later)
    return (end - start).total_seconds()
