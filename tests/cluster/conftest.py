"""Gateway fixtures: `kubesessions gateway` as a real process, the example Apps, callers with tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from ..conftest import REPO, Cluster, OperatorProcess, _free_port, await_condition

GROUP = ("kubesessions.io", "v1alpha1")


class GatewayProcess:
    """`kubesessions gateway` serving one namespace, with the test kubeconfig (admin) as its identity."""

    def __init__(self, kube: Cluster, namespace: str, log_dir: Path, *args: str) -> None:
        self.kube, self.namespace, self.args = kube, namespace, args
        self.log = log_dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        self.port = _free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kube.kubeconfig)}
        argv = [str(Path(sys.executable).parent / "kubesessions"), "gateway", "--namespace", self.namespace,
                "--host", "127.0.0.1", "--port", str(self.port), "--start-timeout", "30", *self.args]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        await_condition(self._ready, timeout=30, what=f"the gateway to serve /readyz (log: {self.log})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(
                f"the gateway exited with {self.proc.returncode}; log:\n{self.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


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


def service_account_token(kube: Cluster, namespace: str, name: str, allowed: bool) -> str:
    """A ServiceAccount's token (TokenRequest); ``allowed`` binds a Role that may create sessions."""
    core, rbac = kube.core, client.RbacAuthorizationV1Api(kube.api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    if allowed:
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": f"{name}-sessions"},
            "rules": [{"apiGroups": ["kubesessions.io"], "resources": ["sessions"],
                       "verbs": ["create", "get", "list", "delete"]}],
        })  # fmt: skip
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": f"{name}-sessions"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-sessions"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        })  # fmt: skip
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    token: str = request.status.token
    return token
