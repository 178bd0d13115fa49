"""The namespace a caller names is checked before anything else: it goes into API paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio.client import ApiClient

from kubesessions.gateway import app as gateway
from kubesessions.gateway.auth import ANONYMOUS, Identity, Verb
from kubesessions.gateway.cache import Cache
from kubesessions.gateway.forward import Forwarder
from kubesessions.gateway.sessions import GatewaySettings, Sessions
from kubesessions.kube.kubeapi import Kube

pytestmark = pytest.mark.unit


class Recorder:
    """An authorizer that lets everyone in and writes down that it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def authenticate(self, token: str | None) -> Identity:
        self.asked.append("authenticate")
        return ANONYMOUS

    async def authorize(self, token: str, identity: Identity, namespace: str, verb: Verb) -> None:
        self.asked.append(f"{verb} {namespace}")


class NoApi(ApiClient):  # type: ignore[misc]
    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the API server was called: {args[:2]}")


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], Recorder]]:
    # Serving every namespace (the chart's default): only the check stands between a caller and the paths.
    settings = GatewaySettings(namespaces=[], default_namespace="default")
    cache, auth = Cache([]), Recorder()
    async with NoApi() as api:
        forwarder = Forwarder(call_timeout=5)
        app = gateway.build(settings, cache, Sessions(cache, Kube(api), settings), forwarder, auth)
        async with TestClient(TestServer(app)) as client:
            yield client, auth
        await forwarder.close()


BAD = ["..%2F..", "../..", "Default", "a" * 64, "-a", "a_b", "a.b", "ns%2Fpods"]


@pytest.mark.parametrize("namespace", BAD)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/sessions"), ("POST", "/v1/run"), ("DELETE", "/v1/sessions/s-x"), ("POST", "/apps/run")],
)
async def test_a_namespace_that_is_not_a_dns_label_is_400_before_anything_happens(
    served: tuple[TestClient[Any, Any], Recorder], namespace: str, method: str, path: str
) -> None:
    client, auth = served
    by_query = await client.request(method, f"{path}?namespace={namespace}", data=b'{"input": 1}')
    by_header = await client.request(
        method, path, headers={"X-Kubesessions-Namespace": namespace}, data=b'{"input": 1}'
    )
    for response in (by_query, by_header):
        problem = await response.json()
        assert (response.status, problem["code"]) == (400, "VALIDATION"), problem
        assert problem["detail"].startswith("namespace: ")
        assert "DNS-1123 label" in problem["detail"] and "at most 63 characters" in problem["detail"]
    assert auth.asked == [], "nothing may happen for a bad namespace, not even authentication"


async def test_a_good_namespace_goes_on(served: tuple[TestClient[Any, Any], Recorder]) -> None:
    client, auth = served
    response = await client.get("/v1/sessions?namespace=" + "a" * 63)
    assert response.status == 200, await response.text()
    assert auth.asked == ["authenticate", "list " + "a" * 63]
