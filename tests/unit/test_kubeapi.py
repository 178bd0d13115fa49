"""The API client counts every write where it is made, by verb and resource."""

from __future__ import annotations

import pytest

from kubesessions.kube.kubeapi import APPLY_PATCH, MERGE_PATCH, write_kind

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("method", "path", "content_type", "expected"),
    [
        ("GET", "/api/v1/namespaces/a/pods/p", "application/json", None),
        ("POST", "/api/v1/namespaces/a/pods", "application/json", "create pods"),
        ("POST", "/api/v1/namespaces/a/events", "application/json", "create events"),
        ("DELETE", "/api/v1/namespaces/a/secrets/s-token", "application/json", "delete secrets"),
        ("PATCH", "/api/v1/namespaces/a/pods/p", MERGE_PATCH, "patch pods"),
        (
            "PATCH",
            "/apis/kubesessions.io/v1alpha1/namespaces/a/sessions/s/status",
            MERGE_PATCH,
            "patch sessions/status",
        ),
        (
            "PATCH",
            "/apis/kubesessions.io/v1alpha1/namespaces/a/apps/x/status",
            MERGE_PATCH,
            "patch apps/status",
        ),
        (
            "DELETE",
            "/apis/kubesessions.io/v1alpha1/namespaces/a/sessions/s",
            "application/json",
            "delete sessions",
        ),
        (
            "PATCH",
            "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/w?fieldManager=k",
            APPLY_PATCH,
            "apply networkpolicies",
        ),
        (
            "PUT",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x",
            "application/json",
            "update customresourcedefinitions",
        ),
    ],
)
def test_a_write_is_named_by_verb_and_resource(
    method: str, path: str, content_type: str, expected: str | None
) -> None:
    assert write_kind(method, path, content_type) == expected
