"""The gateway's HTTP API (aiohttp): routes, auth, problem+json, metrics; and running it."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kubesessions.api.models import is_dns1123_label
from kubesessions.api.names import CALL_ID_HEADER
from kubesessions.common import eventloop, logs
from kubesessions.common.metrics import CONTENT_TYPE
from kubesessions.gateway import compat, cors, openapi
from kubesessions.gateway.auth import Authorizer, KubernetesAuth, NoAuth
from kubesessions.gateway.cache import Cache
from kubesessions.gateway.calls import Call, Calls, wants_new
from kubesessions.gateway.context import (
    AUTH,
    CACHE,
    CALLS,
    FORWARDER,
    IDENTITY,
    METRICS,
    NS,
    NS_GIVEN,
    SESSIONS,
    SETTINGS,
    authorize,
    bearer,
    read_body,
    served,
)
from kubesessions.gateway.forward import Forwarder, snake_events
from kubesessions.gateway.metrics import Metrics
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.requests import CreateSessionRequest, RunRequest, call_id, parse
from kubesessions.gateway.sessions import GatewaySettings, Sessions, view
from kubesessions.kube.kubeapi import Kube, api_client

log = logging.getLogger("kubesessions.gateway")
NAMESPACE_HEADER = "X-Kubesessions-Namespace"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build(
    settings: GatewaySettings, cache: Cache, sessions: Sessions, forwarder: Forwarder, auth: Authorizer
) -> web.Application:
    app = web.Application(middlewares=[_observe, _authenticate], client_max_size=settings.max_body_bytes)
    app[SETTINGS], app[CACHE], app[SESSIONS], app[FORWARDER], app[AUTH] = (
        settings,
        cache,
        sessions,
        forwarder,
        auth,
    )
    app[CALLS] = Calls(sessions, forwarder)
    cors.install(app, settings.cors_origins)
    metrics = app[METRICS] = Metrics()
    metrics.gauge(
        "kubesessions_gateway_cached_sessions",
        "Sessions in the watch-fed cache.",
        lambda: len(cache.sessions),
    )
    metrics.gauge("kubesessions_gateway_cached_apps", "Apps in the watch-fed cache.", lambda: len(cache.apps))
    metrics.counter(
        "kubesessions_gateway_sessions_created_total",
        "Sessions the gateway created.",
        lambda: sessions.created,
    )
    if isinstance(auth, KubernetesAuth):
        metrics.gauge(
            "kubesessions_gateway_auth_cache_hits", "Auth answers served from the cache.", lambda: auth.hits
        )
        metrics.gauge(
            "kubesessions_gateway_auth_reviews",
            "Token and access reviews asked of the API server.",
            lambda: auth.misses,
        )
    app.router.add_post("/v1/run", _run)
    app.router.add_get("/v1/sessions", _list)
    app.router.add_post("/v1/sessions", _create)
    app.router.add_get("/v1/sessions/{id}", _get)
    app.router.add_delete("/v1/sessions/{id}", _delete)
    app.router.add_post("/v1/sessions/{id}/keepalive", _keepalive)
    app.router.add_post("/v1/sessions/{id}/suspend", _suspend)
    app.router.add_post("/v1/sessions/{id}/resume", _resume)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    compat.register(app)
    return app


# -- middlewares ---------------------------------------------------------------------------


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Problems become problem+json; every answer is counted by route, status and code."""
    started = time.perf_counter()
    code = ""
    try:
        response = await handler(request)
    except Problem as problem:
        code = problem.code
        response = problem.response()
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        code = "INTERNAL"
        response = Problem("INTERNAL", "the gateway failed; see its log").response()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    request.app[METRICS].observe(
        f"{request.method} {route}", response.status, code, time.perf_counter() - started
    )
    return response


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is calling (401 if unknown); each handler then asks whether they may do what it does."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    settings = request.app[SETTINGS]
    named = {
        n for n in (request.headers.get(NAMESPACE_HEADER), request.query.get("namespace")) if n is not None
    }
    if len(named) > 1:
        raise Problem(
            "VALIDATION",
            f"namespace: the {NAMESPACE_HEADER} header and ?namespace= name different namespaces",
        )
    given = next(iter(named), None)
    if given == "":
        raise Problem("VALIDATION", "namespace: empty (leave it out for the gateway's default namespace)")
    if given is not None and not is_dns1123_label(given):
        # Checked before anything else: the namespace goes into API paths and cache keys.
        raise Problem(
            "VALIDATION",
            f"namespace: {json.dumps(given[:80])} is not a namespace name, which is a DNS-1123 label: "
            "at most 63 characters, lower-case letters, digits and '-', starting and ending with a "
            "letter or digit",
        )
    namespace = given or settings.default_namespace
    served(settings, namespace)
    request[IDENTITY] = await request.app[AUTH].authenticate(bearer(request))
    request[NS], request[NS_GIVEN] = namespace, bool(given)
    return await handler(request)


# -- the API ---------------------------------------------------------------------------------


async def _run(request: web.Request) -> web.StreamResponse:
    body = parse(RunRequest, await read_body(request))
    key = call_id(request.headers.get(CALL_ID_HEADER))
    identity = await authorize(request, request[NS], "create" if wants_new(body.session) else "get")
    calls = request.app[CALLS]
    call = await calls.begin(request[NS], identity, body.app, body.session, body, key, body.function)
    if body.stream:
        return await _stream(request, call, body.input)
    reply = await calls.run(call, body.input)
    return web.Response(body=reply.body(call.session_id), content_type="application/json")


async def _stream(request: web.Request, call: Call, input: Any) -> web.StreamResponse:
    """The worker's events as it sends them, after one `session` event naming the session."""
    async with request.app[CALLS].stream(call, input) as events:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            await response.write(
                b"event: session\ndata: " + json.dumps({"session_id": call.session_id}).encode() + b"\n\n"
            )
            async for chunk in snake_events(events.chunks()):
                await response.write(chunk)
        except ConnectionResetError:
            # The call runs to its end on the worker anyway, so the app's state stays whole.
            log.info("the client left a streaming call early", extra={"session": call.session_id})
            return response
    await response.write_eof()
    return response


async def _list(request: web.Request) -> web.Response:
    namespace, app = request[NS], request.query.get("app")
    await authorize(request, namespace, "list")
    items = [
        view(body)
        for (ns, _), body in sorted(request.app[CACHE].sessions.items())
        if ns == namespace and (app is None or (body.get("spec") or {}).get("app") == app)
    ]
    return web.json_response({"sessions": items})


async def _create(request: web.Request) -> web.Response:
    namespace = request[NS]
    body = parse(CreateSessionRequest, await read_body(request))
    identity = await authorize(request, namespace, "create")
    sessions = request.app[SESSIONS]
    session_id = await sessions.create(
        namespace, body.app, body, identity, call_id(request.headers.get(CALL_ID_HEADER))
    )
    await sessions.target(namespace, session_id, body.app, ours=True)
    return web.json_response(view(request.app[CACHE].sessions[(namespace, session_id)]), status=201)


async def _get(request: web.Request) -> web.Response:
    await authorize(request, request[NS], "get")
    return web.json_response(await request.app[CALLS].describe(request[NS], request.match_info["id"]))


async def _delete(request: web.Request) -> web.Response:
    identity = await authorize(request, request[NS], "delete")
    await request.app[SESSIONS].end(request[NS], request.match_info["id"], identity)
    return web.Response(status=204)


async def _keepalive(request: web.Request) -> web.Response:
    await authorize(request, request[NS], "patch")
    return web.json_response(await request.app[CALLS].keepalive(request[NS], request.match_info["id"]))


async def _suspend(request: web.Request) -> web.Response:
    await authorize(request, request[NS], "patch")
    session = await request.app[SESSIONS].suspend(request[NS], request.match_info["id"])
    return web.json_response(session, status=202)


async def _resume(request: web.Request) -> web.Response:
    await authorize(request, request[NS], "patch")
    session = await request.app[SESSIONS].resume(request[NS], request.match_info["id"])
    return web.json_response(session, status=202)


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _readyz(request: web.Request) -> web.Response:
    synced = request.app[CACHE].synced()
    return web.json_response({"ready": synced}, status=200 if synced else 503)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def _openapi(request: web.Request) -> web.Response:
    apps = tuple(sorted({name for _, name in request.app[CACHE].apps}))
    return web.json_response(openapi.document(tuple(request.app[SETTINGS].namespaces), apps))


# -- running ---------------------------------------------------------------------------------


async def serve(settings: GatewaySettings) -> None:
    """Run until SIGTERM or SIGINT: watches first, then the listener."""
    api = await api_client()
    cache = Cache(settings.namespaces)
    cache.start(api)
    auth: Authorizer = NoAuth() if settings.auth == "none" else KubernetesAuth(api, ttl=settings.auth_ttl)
    forwarder = Forwarder(settings.call_timeout)
    app = build(settings, cache, Sessions(cache, Kube(api), settings), forwarder, auth)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # With several processes each binds the port itself and the kernel spreads connections.
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=settings.processes > 1)
        await site.start()
        log.info(
            "gateway listening on %s:%d (namespaces: %s, auth: %s, event loop: %s)",
            settings.host,
            settings.port,
            ", ".join(settings.namespaces) or "all",
            settings.auth,
            type(loop).__module__,
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        await forwarder.close()
        await cache.stop()
        await api.close()


def run(settings: GatewaySettings) -> None:
    """Serve in this process, or supervise ``settings.processes`` serving processes."""
    if settings.processes == 1:
        _serve_here(settings)
        return
    sys.exit(_supervise(settings))


def _serve_here(settings: GatewaySettings) -> None:
    eventloop.run(serve(settings))


def _child(settings: GatewaySettings) -> None:
    logs.setup()
    _serve_here(settings)


def _supervise(settings: GatewaySettings) -> int:
    """Start the processes, pass SIGTERM/SIGINT on to them; if one dies the others are stopped too,
    and the exit status says so (a half-served port must not look healthy)."""
    spawn = multiprocessing.get_context("spawn")
    children = [
        spawn.Process(target=_child, args=(settings,), name=f"gateway-{i}") for i in range(settings.processes)
    ]
    stopping = False

    def stop(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    for child in children:
        child.start()
    log.info("gateway: %d processes (pids %s)", len(children), ", ".join(str(c.pid) for c in children))
    multiprocessing.connection.wait([c.sentinel for c in children])
    if not stopping:
        dead = [c for c in children if not c.is_alive()]
        log.error("gateway process %s exited (code %s); stopping the others", dead[0].name, dead[0].exitcode)
        stop(signal.SIGTERM, None)
    for child in children:
        child.join()
    return 0 if stopping and all(c.exitcode == 0 for c in children) else 1
