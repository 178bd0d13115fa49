"""Last of the e2e tests (files run in name order): `helm upgrade`, then `helm uninstall`
leaves nothing running, only the CRDs."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from ..conftest import await_condition
from .conftest import RELEASE, Release, helm, install_args, store_endpoint

pytestmark = pytest.mark.e2e


def test_helm_upgrade_then_uninstall_leaves_only_the_crds(release: Release) -> None:
    kube, ns = release.kube, release.namespace
    started = time.monotonic()
    helm(kube, "upgrade", *install_args(store_endpoint(kube)), "--set=gateway.replicas=1")
    apps = client.AppsV1Api(kube.api)
    gateway = apps.read_namespaced_deployment(f"{RELEASE}-kube-sessions-gateway", ns)
    assert gateway.spec.replicas == 1 and gateway.status.ready_replicas == 1
    print(f"\n[e2e] helm upgrade: {time.monotonic() - started:.1f}s")
    # Sessions are the users' objects: delete them while the operator still runs.
    release.kubectl("delete", "sessions", "--all", "--wait=true", "--timeout=120s")
    started = time.monotonic()
    helm(kube, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout=120s")
    await_condition(
        lambda: not kube.core.list_namespaced_pod(ns).items,
        timeout=60,
        what=f"no pods left in {ns}",
    )
    print(f"[e2e] helm uninstall: {time.monotonic() - started:.1f}s")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    assert not apps.list_namespaced_deployment(ns, label_selector=selector).items
    assert not kube.core.list_namespaced_service(ns, label_selector=selector).items
    assert not kube.core.list_namespaced_service_account(ns, label_selector=selector).items
    assert not kube.core.list_namespaced_secret(ns, label_selector="owner=helm").items
    crds = client.ApiextensionsV1Api(kube.api).list_custom_resource_definition().items
    assert {"sessions.kubesessions.io", "apps.kubesessions.io"} <= {c.metadata.name for c in crds}
