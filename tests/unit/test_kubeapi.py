"""The API client counts every write where it is made, by verb and resource."""

from __future__ import annotations

import pytest
import yarl

from kubesessions.kube.kubeapi import APPLY_PATCH, MERGE_PATCH, core_path, group_path, write_kind

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


def test_paths_quote_every_part_so_no_value_adds_or_climbs_a_segment() -> None:
    assert core_path("a/../b", "pods", "x/y") == "/api/v1/namespaces/a%2F..%2Fb/pods/x%2Fy"
    assert (
        group_path("kubesessions.io/v1alpha1", "../..", "sessions", "s?x=1#f")
        == "/apis/kubesessions.io/v1alpha1/namespaces/..%2F../sessions/s%3Fx%3D1%23f"
    )
    # As the HTTP client sends it: still one segment each, nothing resolved away.
    url = yarl.URL("https://api" + core_path("..%2F..", "secrets", "a/b"))
    assert url.raw_parts == ("/", "api", "v1", "namespaces", "..%252F..", "secrets", "a%2Fb")


@pytest.mark.parametrize("part", ["", ".", ".."])
def test_a_path_part_that_http_would_resolve_away_is_refused(part: str) -> None:
    with pytest.raises(ValueError, match="cannot be a segment"):
        core_path(part, "pods")
    with pytest.raises(ValueError, match="cannot be a segment"):
        group_path("kubesessions.io/v1alpha1", "ns", "sessions", part or ".")
