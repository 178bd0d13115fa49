"""The operator in a real pod: it reaches the API server by the address the kubelet gives it,
and starts handling Sessions at once under the chart's namespaced RBAC."""

from __future__ import annotations

import kopf
import pytest

from kubesessions.control.handlers import configure_kopf, in_cluster_server

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


def test_operator_does_not_scan_namespaces_or_crds() -> None:
    """The chart grants no cluster-wide read of namespaces or CRDs (least privilege); scanning
    for them, kopf retried each refusal for ~90 s before handling any Session."""
    settings = kopf.OperatorSettings()
    assert not settings.scanning.disabled
    configure_kopf(settings)
    assert settings.scanning.disabled


def test_kopf_lets_go_of_an_object_a_second_after_its_last_event() -> None:
    """kopf's per-object task holds the object's last event body while it waits; its default
    5 s kept ~7 MB more at the peak of 1,000 Sessions (bench/idle_cost.py)."""
    settings = kopf.OperatorSettings()
    assert settings.queueing.idle_timeout == 5.0
    configure_kopf(settings)
    assert settings.queueing.idle_timeout == 1.0
