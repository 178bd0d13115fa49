"""API-server trouble (down, stalled, failing, overloaded) is a 503 with Retry-After, which the
client retries, never a 500: the trouble passes, and the call should go through once it has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio.client import ApiClient, Configuration

from kubesessions.client import AsyncClient, Retry, UpstreamUnavailable
from kubesessions.gateway.app import build
from kubesessions.gateway.auth import Identity, KubernetesAuth
from kubesessions.gateway.cache import Cache
from kubesessions.gateway.forward import Forwarder
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.requests import CreateSessionRequest
from kubesessions.gateway.sessions import GatewaySettings, Sessions
from kubesessions.kube.kubeapi import Kube

pytestmark = pytest.mark.unit
TROUBLES = ("down", "stalled", "500", "503", "429")
REVIEWED = {
    "apiVersion": "authentication.k8s.io/v1",
    "kind": "TokenReview",
    "status": {"authenticated": True, "user": {"username": "system:serviceaccount:ns:caller"}},
}
ALLOWED = {
    "apiVersion": "authorization.k8s.io/v1",
    "kind": "SubjectAccessReview",
    "status": {"allowed": True},
}


class FakeApiServer:
    """Answers every request with ``trouble`` ("500", "503", "429" with Retry-After: 7, or
    "stalled": no answer at all) for its first ``failing`` requests, then as a healthy API
    server answers a TokenReview and a SubjectAccessReview."""

    def __init__(self, trouble: str, failing: int = 1000) -> None:
        self.trouble, self.failing, self.requests = trouble, failing, 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.failing:
            if self.trouble == "stalled":
                await asyncio.Event().wait()
            headers = {"Retry-After": "7"} if self.trouble == "429" else {}
            status = {"kind": "Status", "status": "Failure", "message": "etcdserver: request timed out"}
            return web.json_response(status, status=int(self.trouble), headers=headers)
        answer = REVIEWED if request.path.endswith("/tokenreviews") else ALLOWED
        return web.json_response({**answer, "spec": (await request.json())["spec"]}, status=201)


@pytest.fixture
async def api_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeApiServer, ApiClient]]:
    """A fake API server with the trouble asked for ("down": a port where nothing listens),
    and an API client for it."""
    trouble, failing = request.param if isinstance(request.param, tuple) else (request.param, 1000)
    fake = FakeApiServer(trouble, failing)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        configuration = Configuration(host=str(server.make_url("")).rstrip("/"))
        if trouble == "down":
            await server.close()
        async with ApiClient(configuration) as api:
            yield fake, api


def assert_retry_soon(err: pytest.ExceptionInfo[Problem], trouble: str) -> None:
    assert (err.value.code, int(err.value.status)) == ("UPSTREAM_UNAVAILABLE", 503), err.value
    assert err.value.retry_after == (7 if trouble == "429" else 1)
    assert "Kubernetes API server" in err.value.detail
    assert err.value.response().headers["Retry-After"] == str(err.value.retry_after)


@pytest.mark.parametrize("api_server", TROUBLES, indirect=True)
async def test_token_and_access_reviews_that_fail_upstream_are_503(
    api_server: tuple[FakeApiServer, ApiClient],
) -> None:
    fake, api = api_server
    auth = KubernetesAuth(api, timeout=0.5)
    with pytest.raises(Problem) as err:
        await auth.authenticate("a-token")
    assert_retry_soon(err, fake.trouble)
    with pytest.raises(Problem) as err:
        await auth.authorize("a-token", Identity("someone"), "ns", "get")
    assert_retry_soon(err, fake.trouble)
    # Not an answer about the caller: nothing is cached, the next request asks again.
    assert not auth._cache


@pytest.mark.parametrize("api_server", TROUBLES, indirect=True)
async def test_session_reads_and_creates_that_fail_upstream_are_503(
    api_server: tuple[FakeApiServer, ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, api = api_server
    kube = Kube(api)
    if fake.trouble == "stalled":  # the API client's own limit, shortened
        request = kube.request
        monkeypatch.setattr(kube, "request", lambda *a, **k: request(*a, **{**k, "timeout": 0.5}))
    sessions = Sessions(Cache(["ns"]), kube, GatewaySettings(namespaces=["ns"], default_namespace="ns"))
    with pytest.raises(Problem) as err:
        await sessions.find("ns", "s-abc")  # not in the cache: read from the API
    assert_retry_soon(err, fake.trouble)
    app = {"metadata": {"namespace": "ns", "name": "counter", "resourceVersion": "1"}, "spec": {"image": "i"}}
    sessions.cache.seen("apps", app)
    with pytest.raises(Problem) as err:
        await sessions.create("ns", "counter", CreateSessionRequest(app="counter"), Identity("someone"), "k1")
    assert_retry_soon(err, fake.trouble)
    with pytest.raises(Problem) as err:
        await sessions.close("ns", "s-abc", "a test")
    assert_retry_soon(err, fake.trouble)


@pytest.fixture
async def gateway(api_server: tuple[FakeApiServer, ApiClient]) -> AsyncIterator[str]:
    """The gateway's app on a port, authenticating through the fake API server."""
    _, api = api_server
    settings = GatewaySettings(namespaces=["ns"], default_namespace="ns")
    cache = Cache(["ns"])
    forwarder = Forwarder(call_timeout=5)
    app = build(settings, cache, Sessions(cache, Kube(api), settings), forwarder, KubernetesAuth(api))
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")
    await forwarder.close()


@pytest.mark.parametrize("api_server", [("500", 2)], indirect=True)
async def test_the_client_retries_a_gateway_whose_api_server_failed_and_gets_through(
    api_server: tuple[FakeApiServer, ApiClient], gateway: str
) -> None:
    retried: list[str] = []
    retry = Retry(attempts=4, backoff=0.01, on_retry=retried.append)
    async with AsyncClient(gateway, token="a-token", namespace="ns", retry=retry) as client:
        assert await client.list_sessions() == []
    assert retried == ["HTTP 503", "HTTP 503"]  # two TokenReviews failed, the third passed


@pytest.mark.parametrize("api_server", ["down"], indirect=True)
async def test_a_gateway_whose_api_server_stays_down_gives_a_typed_error(gateway: str) -> None:
    retried: list[str] = []
    retry = Retry(attempts=3, backoff=0.01, on_retry=retried.append)
    async with AsyncClient(gateway, token="a-token", namespace="ns", retry=retry) as client:
        with pytest.raises(UpstreamUnavailable) as err:
            await client.list_sessions()
    assert (err.value.status, err.value.code) == (503, "UPSTREAM_UNAVAILABLE")
    assert err.value.problem["retry_after"] == 1
    assert retried == ["HTTP 503", "HTTP 503"]
