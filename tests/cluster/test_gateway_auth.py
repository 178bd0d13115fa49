"""The gateway asks RBAC for the verb each route performs, and agrees with `kubectl auth can-i`.

Real ServiceAccount tokens against the local cluster's API server; no operator is needed, since
every route is checked before it looks at a session (missing ids answer 404 once allowed).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ..conftest import REPO, Cluster
from .conftest import CALLER_VERBS, GROUP, GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster
MISSING = "s-" + "a" * 24
SESSION = "made-with-kubectl"

# (verb, method, path, body) for every authenticated route of both surfaces; {id} is SESSION.
ROUTES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("create", "POST", "/v1/run", {"app": "nope", "input": 1, "session": "new"}),
    ("create", "POST", "/v1/run", {"app": "nope", "input": 1}),
    ("create", "POST", "/v1/sessions", {"app": "nope"}),
    ("create", "POST", "/apps/run", {"app": "nope", "input": 1}),
    ("get", "POST", "/v1/run", {"app": "echo", "input": 1, "session": MISSING}),
    ("get", "POST", "/apps/run", {"app": "echo", "input": 1, "session": MISSING}),
    ("get", "GET", "/v1/sessions/{id}", None),
    ("get", "GET", "/sessions/{id}", None),
    ("list", "GET", "/v1/sessions", None),
    ("list", "GET", "/sessions", None),
    ("delete", "DELETE", f"/v1/sessions/{MISSING}", None),
    ("delete", "DELETE", f"/sessions/{MISSING}", None),
    ("patch", "POST", f"/v1/sessions/{MISSING}/keepalive", None),
    ("patch", "POST", f"/sessions/{MISSING}/keepalive", None),
]


@pytest.fixture
def gateway(kube: Cluster, namespace: str, apps: None, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(kube, namespace, tmp_path).start()
    yield gw
    gw.stop()


def make_session(kube: Cluster, namespace: str, name: str) -> None:
    body = {"apiVersion": "kubesessions.io/v1alpha1", "kind": "Session", "metadata": {"name": name}}
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(
        *GROUP, namespace, "sessions", {**body, "spec": {"app": "echo"}}
    )


def call(
    gateway: GatewayProcess,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    namespace: str | None = None,
) -> tuple[int, Any]:
    url = gateway.url + path + (f"?namespace={namespace}" if namespace else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def can_i(kube: Cluster, tmp_path: Path, token: str, verb: str, namespace: str) -> bool:
    """`kubectl auth can-i` as the token's owner: a kubeconfig with the token and no client certificate."""
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    config = tmp_path / f"token-{abs(hash(token))}.kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "t",
            }
        )
    )
    resource = "sessions.kubesessions.io"
    out = subprocess.run(
        [str(kube.kubectl), f"--kubeconfig={config}", "auth", "can-i", verb, resource, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() in ("yes", "no"), (out.stdout, out.stderr)
    return out.stdout.strip() == "yes"


def readme_role() -> dict[str, Any]:
    """The Role the README gives a gateway caller."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            if doc and doc.get("kind") == "Role" and doc["metadata"]["name"] == "session-caller":
                role: dict[str, Any] = doc
                return role
    pytest.fail("the README has no Role named session-caller")


def test_each_route_asks_for_its_verb_as_kubectl_auth_can_i_does(
    gateway: GatewayProcess, kube: Cluster, namespace: str, tmp_path: Path
) -> None:
    make_session(kube, namespace, SESSION)
    for granted in CALLER_VERBS:
        token = service_account_token(kube, namespace, f"only-{granted}", allowed=True, verbs=[granted])
        for verb in CALLER_VERBS:
            assert can_i(kube, tmp_path, token, verb, namespace) == (verb == granted), (granted, verb)
        for verb, method, path, body in ROUTES:
            status, answer = call(gateway, token, method, path.format(id=SESSION), body, namespace)
            if verb == granted:
                assert status != 403 and status < 500, (granted, method, path, answer)
            else:
                assert (status, answer["code"]) == (403, "FORBIDDEN"), (granted, method, path, answer)
                assert f"may not {verb} sessions.kubesessions.io" in answer["detail"], answer
    # The reported case: a token that may only create neither lists nor closes others' sessions.
    creator = service_account_token(kube, namespace, "creator", allowed=True, verbs=["create"])
    assert call(gateway, creator, "GET", "/v1/sessions", namespace=namespace)[0] == 403
    assert call(gateway, creator, "DELETE", f"/v1/sessions/{SESSION}", namespace=namespace)[0] == 403
    body = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        *GROUP, namespace, "sessions", SESSION
    )
    assert "kubesessions.io/close" not in (body["metadata"].get("annotations") or {})


def test_a_bad_token_is_401_unauthorized_and_no_rbac_is_403_forbidden(
    gateway: GatewayProcess, kube: Cluster, namespace: str
) -> None:
    status, problem = call(gateway, "not-a-token", "GET", "/v1/sessions", namespace=namespace)
    assert (status, problem["code"]) == (401, "UNAUTHORIZED"), problem
    outsider = service_account_token(kube, namespace, "outsider", allowed=False)
    status, problem = call(gateway, outsider, "GET", "/v1/sessions", namespace=namespace)
    assert (status, problem["code"]) == (403, "FORBIDDEN"), problem
    assert f"system:serviceaccount:{namespace}:outsider may not list" in problem["detail"]


def test_the_readme_role_grants_exactly_what_a_caller_needs(
    gateway: GatewayProcess, kube: Cluster, namespace: str, tmp_path: Path
) -> None:
    make_session(kube, namespace, SESSION)
    role = readme_role()
    (rule,) = role["rules"]
    assert (rule["apiGroups"], rule["resources"]) == (["kubesessions.io"], ["sessions"])
    token = service_account_token(kube, namespace, "readme", allowed=True, verbs=rule["verbs"])
    for verb, method, path, body in ROUTES:
        status, answer = call(gateway, token, method, path.format(id=SESSION), body, namespace)
        assert status != 403 and status < 500, (verb, method, path, answer)
    for verb in ("update", "watch", "deletecollection"):
        assert not can_i(kube, tmp_path, token, verb, namespace), (
            f"the README's Role grants {verb}: not needed"
        )
    assert sorted(rule["verbs"]) == sorted(CALLER_VERBS)


def test_an_id_in_two_namespaces_is_answered_by_the_one_asked_for(
    kube: Cluster, namespace: str, apps: None, tmp_path: Path
) -> None:
    other = f"{namespace}-b"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    gateway = GatewayProcess(kube, namespace, tmp_path, "--namespace", other).start()
    try:
        for where in (namespace, other):
            make_session(kube, where, SESSION)
        both = service_account_token(kube, namespace, "both", allowed=True, also_in=[other])
        for where in (namespace, other, namespace):
            status, answer = call(gateway, both, "GET", f"/sessions/{SESSION}", namespace=where)
            assert (status, answer["data"]["namespace"]) == (200, where), answer
        # The SDK names no namespace: an id that two hold is refused, never guessed.
        status, problem = call(gateway, both, "GET", f"/sessions/{SESSION}")
        assert (status, problem["code"]) == (409, "SESSION_AMBIGUOUS"), problem
        assert "name the namespace" in problem["detail"]
        # Allowed in the first namespace only: the other one's session is out of reach.
        first_only = service_account_token(kube, namespace, "first-only", allowed=True)
        status, problem = call(gateway, first_only, "DELETE", f"/sessions/{SESSION}", namespace=other)
        assert (status, problem["code"]) == (403, "FORBIDDEN"), problem
        status, problem = call(gateway, first_only, "DELETE", f"/sessions/{SESSION}")
        assert (status, problem["code"]) == (409, "SESSION_AMBIGUOUS"), problem
        custom = client.CustomObjectsApi(kube.api)
        assert "kubesessions.io/close" not in (
            custom.get_namespaced_custom_object(*GROUP, other, "sessions", SESSION)["metadata"].get(
                "annotations"
            )
            or {}
        )
    finally:
        gateway.stop()
        kube.core.delete_namespace(other)
