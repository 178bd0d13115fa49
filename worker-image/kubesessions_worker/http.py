"""The worker's HTTP surface (aiohttp): routes, bearer auth, problem+json, SSE.

A thin layer: it parses requests, hands calls to the :class:`Runner` and renders the
runner's events as one JSON reply or as a stream of server-sent events.
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import metrics
from .calls import KEY_HEADER, Call, Done, Event, Failed, Output, check_key
from .gpu import GpuMonitor
from .problems import Problem
from .runner import Runner, State
from .termination import Reason

log = logging.getLogger(__name__)

RUNNER = web.AppKey("runner", Runner)
GPU = web.AppKey("gpu", GpuMonitor)
TOKEN = web.AppKey("token", bytes)
MAX_BODY = web.AppKey("max_body", int)
PROBLEM_TYPE = "application/problem+json"
# Kubelet probes carry no token; everything else does.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build(runner: Runner, gpu: GpuMonitor, *, token: str, max_body_bytes: int) -> web.Application:
    app = web.Application(middlewares=[_problems, _auth], client_max_size=max_body_bytes)
    app[RUNNER] = runner
    app[GPU] = gpu
    app[TOKEN] = token.encode()
    app[MAX_BODY] = max_body_bytes
    app.router.add_post("/run", _run)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/close", _close)
    app.router.add_post("/keepalive", _keepalive)
    return app


def problem_response(problem: Problem) -> web.Response:
    headers = {}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    if problem.code == "UNAUTHORIZED":
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response(
        problem.body(), status=problem.status, content_type=PROBLEM_TYPE, headers=headers
    )


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in OPEN_PATHS:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), request.app[TOKEN]):
            raise Problem(
                "UNAUTHORIZED", "a valid 'Authorization: Bearer <session token>' header is required"
            )
    return await handler(request)


async def _run(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Problem("VALIDATION", "'stream' must be true or false")
    call = request.app[RUNNER].submit(body["input"], key=check_key(request.headers.get(KEY_HEADER)))
    if stream or "text/event-stream" in request.headers.get("Accept", ""):
        return await _sse(request, call)
    return await _reply(call)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Problem(
            "PAYLOAD_TOO_LARGE", f"the body is over the limit of {request.app[MAX_BODY]} bytes"
        ) from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise Problem("VALIDATION", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict) or "input" not in body:
        raise Problem("VALIDATION", 'the body must be a JSON object with "input"')
    return body


async def _reply(call: Call) -> web.Response:
    outputs: list[str] = []
    async for batch in call.follow():
        outputs.extend(event.json for event in batch if isinstance(event, Output))
    event = batch[-1]
    if isinstance(event, Failed):
        raise event.problem
    assert isinstance(event, Done)
    # Outputs arrive encoded; a streamed run answers a plain request with the list of its values.
    output = "[" + ",".join(outputs) + "]" if call.streamed else outputs[0]
    return web.Response(text=f'{{"output":{output},{_done_members(event)}}}', content_type="application/json")


async def _sse(request: web.Request, call: Call) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    # The headers go out now: they tell the caller its call is queued (the gateway's ordering).
    await response.prepare(request)
    # What has arrived goes out in one write, the end of the stream with the last event: a
    # quick call costs the caller one more packet after the headers, not three.
    async for events in call.follow():
        chunk = "".join(map(_sse_event, events)).encode()
        last = not isinstance(events[-1], Output)
        try:
            await (response.write_eof(chunk) if last else response.write(chunk))
        except ConnectionResetError:
            # The call still runs to its end, so the app's state stays whole.
            log.info("the client left a streaming call early")
            break
    return response


def _sse_event(event: Event) -> str:
    if isinstance(event, Output):
        return f"event: output\ndata: {event.json}\n\n"
    if isinstance(event, Done):
        return f"event: done\ndata: {{{_done_members(event)}}}\n\n"
    return f"event: error\ndata: {json.dumps(event.problem.body())}\n\n"


def _done_members(done: Done) -> str:
    return f'"sessionClosed":{json.dumps(done.session_closed)},"durationMs":{json.dumps(done.duration_ms)}'


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"state": request.app[RUNNER].state})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[RUNNER].state
    ready = state in (State.READY, State.BUSY)
    return web.json_response({"state": state, "ready": ready}, status=200 if ready else 503)


async def _status(request: web.Request) -> web.Response:
    s = request.app[RUNNER].status()
    return web.json_response(
        {
            "state": s.state,
            "sessionId": s.session_id,
            "lastActivity": rfc3339(s.last_activity),
            "idleSeconds": round(s.idle_seconds, 3),
            "inFlight": s.in_flight,
            "queued": s.queued,
            "calls": s.calls,
            "uptimeSeconds": round(s.uptime_seconds, 3),
            "sessionTimeout": s.session_timeout,
            "gpu": request.app[GPU].snapshot.to_json(),
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    runner = request.app[RUNNER]
    text = metrics.render(runner.stats, runner.status(), request.app[GPU].snapshot)
    return web.Response(text=text, headers={"Content-Type": metrics.CONTENT_TYPE})


async def _close(request: web.Request) -> web.Response:
    """``?ifIdleFor=<seconds>``: close only if idle that long (the operator's idle cull)."""
    runner = request.app[RUNNER]
    raw = request.query.get("ifIdleFor")
    if raw is None:
        runner.stop(Reason.CLOSED, "POST /close")
        return web.json_response({"state": State.CLOSING}, status=202)
    try:
        seconds = float(raw)
        if not 0 < seconds <= 86400:
            raise ValueError
    except ValueError:
        raise Problem(
            "VALIDATION", f"ifIdleFor must be a number of seconds in (0, 86400], got {raw!r}"
        ) from None
    remaining = runner.close_if_idle(seconds)
    if remaining is None:
        return web.json_response({"state": State.CLOSING}, status=202)
    body = {
        "state": runner.state,
        "idleSeconds": round(runner.idle_seconds(), 3),
        "remainingSeconds": round(remaining, 3),
    }
    return web.json_response(body, status=409)


async def _keepalive(request: web.Request) -> web.Response:
    runner = request.app[RUNNER]
    if not runner.keepalive():
        raise Problem("SESSION_ENDED", "the session is ending")
    return web.json_response({"lastActivity": rfc3339(runner.status().last_activity)})


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
