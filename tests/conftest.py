"""Shared fixtures: one local cluster per test run, a fresh namespace per test."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config, watch
from kubesessions.localcluster import binaries, cluster
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


def await_pod(
    kube: Cluster, namespace: str, name: str, check: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    """Watch one pod until ``check(pod)`` holds; fail with the pod's last status otherwise."""
    core = kube.core
    pod = core.read_namespaced_pod(name, namespace)
    if check(pod):
        return pod
    deadline = time.monotonic() + timeout
    w = watch.Watch()
    version = pod.metadata.resource_version
    while (left := deadline - time.monotonic()) > 0:
        for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=max(1, int(left)),
        ):
            pod = event["object"]
            version = pod.metadata.resource_version
            if event["type"] != "DELETED" and check(pod):
                w.stop()
                return pod
    pytest.fail(
        f"pod {namespace}/{name}: timed out after {timeout:.0f}s waiting for {what}; last status: {pod.status}"
    )
