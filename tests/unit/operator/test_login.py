"""The operator in a pod reaches the API server by the address the kubelet gives it."""

from __future__ import annotations

import pytest

from kubesessions.handlers import in_cluster_server

pytestmark = pytest.mark.unit


def test_in_cluster_server_is_the_service_address_not_a_dns_name() -> None:
    # A cluster without DNS (the kubelet node) cannot resolve kopf's kubernetes.default.svc.
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://10.96.0.1:443"


def test_in_cluster_server_brackets_ipv6() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://[fd00::1]:443"


@pytest.mark.parametrize(
    "env", [{}, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT": "443"}]
)
def test_outside_a_pod_there_is_no_in_cluster_server(env: dict[str, str]) -> None:
    assert in_cluster_server(env) is None
