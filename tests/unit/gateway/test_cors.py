"""CORS without a cluster: preflights from allowed and other origins, the allow header on answers
(streamed and problem answers included), off by default, and the --cors-origin check."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from kubesessions.cli.commands import build_parser
from kubesessions.gateway import cors
from kubesessions.gateway.compat import status_dto
from kubesessions.gateway.problems import Problem

pytestmark = pytest.mark.unit

ORIGIN = "https://app.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "DELETE",
    "Access-Control-Request-Headers": "authorization,content-type",
}
Client = Callable[[list[str]], Coroutine[Any, Any, TestClient[web.Request, web.Application]]]


@web.middleware
async def _needs_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The gateway's order: problems become answers, and no token is 401 (a preflight has none)."""
    try:
        if "Authorization" not in request.headers:
            raise Problem("UNAUTHORIZED", "no token")
        return await handler(request)
    except Problem as problem:
        return problem.response()


async def _plain(_: web.Request) -> web.Response:
    return web.json_response({"data": []})


async def _streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write(b'{"status": 10}\n')
    await response.write_eof()
    return response


@pytest.fixture
async def make_client() -> AsyncIterator[Client]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(origins: list[str]) -> TestClient[web.Request, web.Application]:
        app = web.Application(middlewares=[_needs_token])
        cors.install(app, origins)
        app.router.add_get("/sessions", _plain)
        app.router.add_delete("/sessions/{id}", _plain)
        app.router.add_get("/tasks/{id}/stream", _streamed)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_preflight_from_an_allowed_origin_needs_no_token(make_client: Client) -> None:
    client = await make_client([ORIGIN, "http://localhost:3000"])
    resp = await client.options("/sessions/s-1", headers=PREFLIGHT)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize("origins", [[ORIGIN], []], ids=["another-origin", "cors-off"])
async def test_preflight_from_another_origin_is_refused(make_client: Client, origins: list[str]) -> None:
    client = await make_client(origins)
    resp = await client.options("/sessions/s-1", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "--cors-origin" in (await resp.json())["detail"]


async def test_answers_to_an_allowed_origin_say_so_streams_and_errors_too(make_client: Client) -> None:
    client = await make_client([ORIGIN])
    token = {"Authorization": "Bearer t", "Origin": ORIGIN}
    for path, headers, status in (
        ("/sessions", token, 200),
        ("/tasks/t-1/stream", token, 200),
        ("/sessions", {"Origin": ORIGIN}, 401),
    ):
        resp = await client.get(path, headers=headers)
        assert resp.status == status
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN, path
        assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
    other = await client.get("/sessions", headers={**token, "Origin": "https://evil.example"})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers


async def test_any_origin(make_client: Client) -> None:
    client = await make_client(["*"])
    resp = await client.options("/sessions", headers={**PREFLIGHT, "Origin": "http://x.test:81"})
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "http://x.test:81"


async def test_off_by_default_answers_carry_no_cors_headers(make_client: Client) -> None:
    client = await make_client([])
    resp = await client.get("/sessions", headers={"Authorization": "Bearer t", "Origin": ORIGIN})
    assert resp.status == 200
    assert not [h for h in resp.headers if h.lower().startswith("access-control") or h == "Vary"]


def test_cors_origin_flag() -> None:
    args = build_parser().parse_args(["gateway", "--cors-origin", ORIGIN + "/", "--cors-origin", "*"])
    assert args.cors_origin == [ORIGIN, "*"]
    for bad in ("app.example", "https://app.example/path", "ftp://app.example", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["gateway", "--cors-origin", bad])


def test_task_status_view_keeps_the_tasks_status_number() -> None:
    task = {"id": "t-1.x", "status": 7, "updated_at": "2026-01-01T00:00:00Z", "output": [1], "input": {}}
    assert status_dto(task) == {"id": "t-1.x", "status": 7, "updated_at": "2026-01-01T00:00:00Z"}
