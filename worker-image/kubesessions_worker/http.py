"""The worker's HTTP surface (aiohttp): routes, bearer auth, problem+json, SSE.

A thin layer: it parses requests, hands calls to the :class:`Runner` and renders the
runner's events as one JSON reply or as a stream of server-sent events.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kubesessions.api.names import CALL_ID_HEADER

from . import claim, metrics, suspension
from .calls import Call, Done, Event, Failed, Output, check_key
from .gpu import GpuMonitor
from .problems import Problem
from .runner import Runner, State
from .termination import Reason

log = logging.getLogger(__name__)

RUNNER = web.AppKey("runner", Runner)
GPU = web.AppKey("gpu", GpuMonitor)
MAX_BODY = web.AppKey("max_body", int)
PROBLEM_TYPE = "application/problem+json"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
QUICK_SECONDS = 0.002
# Kubelet probes carry no token; everything else does.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build(
    runner: Runner,
    gpu: GpuMonitor,
    *,
    token: str,
    max_body_bytes: int,
    slot: claim.Slot | None = None,
) -> web.Application:
    """``slot``: a warm pool worker's (``token`` is then the pool's until it is claimed)."""
    app = web.Application(middlewares=[_guard], client_max_size=max_body_bytes)
    app[RUNNER] = runner
    app[GPU] = gpu
    app[MAX_BODY] = max_body_bytes
    claim.install(app, runner, slot or claim.Slot(pooled=False), claim.Credential(token.encode()))
    app.router.add_post("/run", _run)
    app.router.add_get("/calls/{id}", _call)
    app.router.add_post("/calls/{id}/cancel", _cancel)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/close", _close)
    app.router.add_post("/keepalive", _keepalive)
    suspension.install(app, runner)
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
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer auth, and any :class:`Problem` as problem+json: one middleware, not two, as
    each costs a wrapper per request on the ``/run`` hot path."""
    try:
        if request.path not in OPEN_PATHS:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not request.app[claim.CREDENTIAL].matches(given.strip()):
                raise Problem(
                    "UNAUTHORIZED", "a valid 'Authorization: Bearer <session token>' header is required"
                )
            claim.check_claimed(request)
        return await handler(request)
    except Problem as problem:
        return problem_response(problem)


async def _run(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Problem("VALIDATION", "'stream' must be true or false")
    runner = request.app[RUNNER]
    key = check_key(request.headers.get(CALL_ID_HEADER))
    try:
        function = _function(body, runner.app.functions())
    except Problem as problem:
        if key is None:
            raise
        raise runner.refuse(body["input"], key, body.get("function"), problem) from None
    call = runner.submit(body["input"], key=key, function=function)
    if stream or "text/event-stream" in request.headers.get("Accept", ""):
        return await _sse(request, call)
    return await _reply(call)


async def _call(request: web.Request) -> web.StreamResponse:
    """A call by its id (``Idempotency-Key``), read by whoever did not make it (another gateway
    replica): its state as JSON, ``?wait=S`` to wait up to S seconds for it to finish first, or
    its events as SSE (``Accept: text/event-stream``), from the first, until it ends."""
    call = request.app[RUNNER].recent.get(request.match_info["id"])
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await _sse(request, call)
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
        if not 0 <= wait <= 300:
            raise ValueError
    except ValueError:
        raise Problem("VALIDATION", f"wait must be a number of seconds in [0, 300], got {raw!r}") from None
    if wait and not call.finished:
        await call.settled(wait)
    return web.json_response(call.view())


async def _cancel(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNNER].cancel(request.match_info["id"]).view())


def _function(body: dict[str, Any], known: list[str] | None) -> str:
    """The function named in the body (default ``run``); one the app lacks is a 400 naming those
    it has. Before setup the app's functions are unknown: the runner refuses the call anyway."""
    name = body.get("function", "run")
    if not isinstance(name, str):
        raise Problem("VALIDATION", "'function' must be the name of one of the app's functions")
    if known is not None and name not in known:
        raise Problem(
            "VALIDATION", f"unknown function {name!r}; this app has: {', '.join(known)}", functions=known
        )
    return name


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
    body = f'{{"output":{output},{_done_members(event)}}}'.encode()
    return web.Response(body=body, content_type="application/json")


async def _sse(request: web.Request, call: Call) -> web.StreamResponse:
    # A call over within QUICK_SECONDS is answered whole: headers and events in one write, which
    # its caller reads in one wake-up (the gateway's CPU per call: docs/performance.md).
    await call.settled(QUICK_SECONDS)
    if call.finished:
        return web.Response(body="".join(map(_sse_event, call.events)).encode(), headers=SSE_HEADERS)
    response = web.StreamResponse(headers=SSE_HEADERS)
    # A longer one has its headers sent now: they tell the caller its call is queued (the
    # gateway's ordering), QUICK_SECONDS after it was at the latest.
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
    # A bool and a finite float (a duration) need no encoder: their JSON is their repr.
    closed = "true" if done.session_closed else "false"
    return f'"sessionClosed":{closed},"durationMs":{done.duration_ms!r}'


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"state": request.app[RUNNER].state})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[RUNNER].state
    # A suspending worker stays ready: it is still the session's, and exits when done.
    ready = state in (State.READY, State.BUSY, State.SUSPENDING)
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
            "heldSeconds": {state: round(seconds, 3) for state, seconds in s.held.items()},
            "suspendable": request.app[RUNNER].app.suspendable(),
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
