"""The inference.sh SDK's wire protocol, so ``inference(api_key=<token>, base_url=<gateway>)`` works unchanged.

The SDK starts a task with ``POST /apps/run``, then follows it: ``GET /tasks/{id}`` and the task's
NDJSON update stream ``GET /tasks/{id}/stream`` until a terminal status. Answers are wrapped as
``{"data": ...}``; errors are the gateway's problem+json, whose ``detail`` the SDK puts in its
exception text (so an expired session reads "session not found").

A task is one call on a session. The replica that started it keeps it in memory (finished ones
within ``--task-bytes`` of inputs and outputs, the oldest forgotten first); any other replica
reads it by the id, which names the call and its session (:mod:`.remotetasks`): from the
session's worker, or, for a one-shot task whose session has closed, from the outcome its Session
recorded. So a gateway Service with several replicas needs no client-IP affinity. A run request
with an ``Idempotency-Key`` names its task by the key: sent again, it is the same task, and its
call runs once.

App references ``namespace/name@version[:function]`` map onto the App ``name``. The namespace part
names the Kubernetes namespace when this gateway serves it (or, serving all, when that namespace
holds the App); any other owner (an inference.sh user name) means the request's namespace. Apps
have no versions here, so ``@version`` is accepted and not checked; ``:function`` (or the request's
function) picks one of the app's functions, ``run`` by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from kubesessions.api.models import DNS1123_SUBDOMAIN, Phase
from kubesessions.api.names import CALL_ID_HEADER, JSON
from kubesessions.common.timefmt import rfc3339
from kubesessions.gateway import remotetasks
from kubesessions.gateway.auth import Verb
from kubesessions.gateway.calls import Call, wants_new
from kubesessions.gateway.context import (
    CACHE,
    CALLS,
    IDENTITY,
    METRICS,
    NS,
    NS_GIVEN,
    SESSIONS,
    SETTINGS,
    authorize,
    read_body,
)
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.requests import CreateSessionRequest, call_id, describe, parse
from kubesessions.gateway.sessions import closing, view
from kubesessions.gateway.taskstatus import TERMINAL, Status

log = logging.getLogger("kubesessions.gateway")
HEARTBEAT = 10.0  # seconds between heartbeat lines of an idle stream; the SDK gives up after 30 of them
REF = re.compile(
    r"^(?:(?P<owner>[^/@:]+)/)?(?P<name>[^/@:]+)(?:@(?P<version>[^/@:]+))?(?::(?P<function>[^/@:]+))?$"
)
# Bytes a finished task is counted for besides its input, output and error (its record and ids).
TASK_OVERHEAD = 512
# Fields of the SDK's run request that ask for hosted-service features this gateway has no counterpart for.
UNSUPPORTED = ("app_id", "version_id", "infra", "workers", "webhook", "run_at", "metadata")


class AppRunRequest(BaseModel):
    """``POST /apps/run`` as the SDK sends it; fields it never sends are refused by name."""

    model_config = ConfigDict(extra="forbid")

    app: StrictStr
    input: Any = None
    session: StrictStr | None = None
    session_timeout: Any = None  # checked by the session's own rules (CreateSessionRequest)
    setup: dict[str, Any] | None = None  # the SDK's setup parameters are our session config
    function: StrictStr | None = None
    # How the SDK follows the task is its own business: the task is the same either way.
    stream: StrictBool = False
    wait: StrictBool = True
    app_id: Any = None
    version_id: Any = None
    infra: Any = None
    workers: Any = None
    webhook: Any = None
    run_at: Any = None
    metadata: Any = None


@dataclass
class Task:
    id: str
    namespace: str
    app: str
    session_id: str
    input: Any
    function: str = "run"
    input_bytes: int = 0  # the request body's, an upper bound of the input's encoding
    output_bytes: int = 0
    status: Status = Status.QUEUED
    output: Any = None
    error: str | None = None
    created_at: str = field(default_factory=lambda: rfc3339(precision="microseconds"))
    updated_at: str = field(default_factory=lambda: rfc3339(precision="microseconds"))
    runner: asyncio.Task[None] | None = None
    # Replaced on every change, so a stream waits on the one current when it last looked.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self, status: Status, *, output: Any = None, error: str | None = None) -> None:
        self.status, self.output, self.error, self.updated_at = (
            status,
            output,
            error,
            rfc3339(precision="microseconds"),
        )
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def size(self) -> int:
        """Bytes the task holds, about: what it is counted for against ``--task-bytes``."""
        return TASK_OVERHEAD + self.input_bytes + self.output_bytes + len(self.error or "")

    def dto(self) -> JSON:
        return {
            "id": self.id,
            "app": self.app,
            "namespace": self.namespace,
            "session_id": self.session_id,
            "status": int(self.status),
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "logs": None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class Tasks:
    """Tasks by id: running ones, and finished ones within ``budget`` bytes, oldest forgotten first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._tasks: dict[str, Task] = {}
        self._finished: OrderedDict[str, int] = OrderedDict()  # id -> bytes, oldest first
        self.bytes = 0  # of the finished tasks kept
        self.evicted = 0

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task

    def finished(self, task: Task) -> None:
        """A task ended: count its bytes, then forget the oldest finished ones over the budget
        (another replica's way of reading them, the worker or the Session, is this one's then)."""
        self._finished[task.id] = size = task.size()
        self.bytes += size
        while self.bytes > self.budget and self._finished:
            task_id, size = self._finished.popitem(last=False)
            self.bytes -= size
            del self._tasks[task_id]
            self.evicted += 1

    def find(self, task_id: str) -> Task | None:
        """A task this replica started (other replicas' tasks are asked of their workers)."""
        return self._tasks.get(task_id)

    def running(self) -> list[asyncio.Task[None]]:
        return [t.runner for t in self._tasks.values() if t.runner is not None and not t.runner.done()]


TASKS = web.AppKey("compat_tasks", Tasks)


def register(app: web.Application) -> None:
    tasks = app[TASKS] = Tasks(app[SETTINGS].task_bytes)
    app[METRICS].gauge(
        "kubesessions_gateway_task_bytes",
        "Bytes of finished inference.sh tasks this replica keeps (inputs, outputs, errors).",
        lambda: tasks.bytes,
    )
    app[METRICS].counter(
        "kubesessions_gateway_tasks_evicted_total",
        "Finished inference.sh tasks forgotten to stay within --task-bytes, oldest first.",
        lambda: tasks.evicted,
    )
    app.on_cleanup.append(_cancel_running)
    app.router.add_post("/apps/run", _run)
    app.router.add_get("/tasks/{id}", _task)
    app.router.add_get("/tasks/{id}/stream", _stream)
    app.router.add_get("/tasks/{id}/status", _status)
    app.router.add_post("/tasks/{id}/cancel", _cancel)
    app.router.add_get("/sessions", _list)
    app.router.add_get("/sessions/{id}", _get)
    app.router.add_delete("/sessions/{id}", _end)
    app.router.add_post("/sessions/{id}/keepalive", _keepalive)


def _data(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"data": data}, status=status)


def _target_app(request: web.Request, ref: str) -> tuple[str, str, str | None]:
    """(namespace, App name, function if the reference names one) of an SDK app reference."""
    match = REF.match(ref)
    name = match["name"] if match else ""
    if not match or not re.fullmatch(DNS1123_SUBDOMAIN, name):
        raise Problem("VALIDATION", f'app: "{ref}" is not an app reference (namespace/name@version or name)')
    owner, settings = match["owner"], request.app[SETTINGS]
    if owner and (
        owner in settings.namespaces or (not settings.namespaces and (owner, name) in request.app[CACHE].apps)
    ):
        return owner, name, match["function"]
    return request[NS], name, match["function"]


async def _run(request: web.Request) -> web.Response:
    raw = await read_body(request)
    body = parse(AppRunRequest, raw)
    key = call_id(request.headers.get(CALL_ID_HEADER))
    refused = [name for name in UNSUPPORTED if getattr(body, name) is not None]
    if refused:
        raise Problem("VALIDATION", f"not supported by kube-sessions: {', '.join(refused)}")
    namespace, name, named = _target_app(request, body.app)
    function = body.function or named or "run"  # the worker says which functions exist
    identity = await authorize(request, namespace, "create" if wants_new(body.session) else "get")
    spec = None
    if wants_new(body.session):
        try:
            spec = CreateSessionRequest(app=name, session_timeout=body.session_timeout, config=body.setup)
        except ValidationError as exc:
            raise Problem("VALIDATION", describe(exc)) from None
    # Settled now, so an unknown or ended session fails the run request itself with "session not found".
    # The task's call id: the worker runs it at most once and keeps its outcome, which any
    # replica can then read by the task's id (it names the session too). Derived from the
    # request's key when it has one, so the request sent again is the same task.
    task_call = "t-" + (
        secrets.token_hex(12)
        if key is None
        else hashlib.sha256(f"{namespace}/{identity.username}/{key}".encode()).hexdigest()[:24]
    )
    call = await request.app[CALLS].begin(namespace, identity, name, body.session, spec, task_call, function)
    task_id = remotetasks.task_id(task_call, namespace, call.session_id)
    known = request.app[TASKS].find(task_id)
    if known is not None:
        return _data(known.dto())
    task = Task(task_id, namespace, name, call.session_id, body.input, function, input_bytes=len(raw))
    request.app[TASKS].add(task)
    task.runner = asyncio.create_task(_execute(request.app, task, call))
    return _data(task.dto())


async def _execute(app: web.Application, task: Task, call: Call) -> None:
    """The task's call, made as ``POST /v1/run`` makes it; the task records how it went, as soon
    as the worker has said (a one-shot session is closed after that), unless it knows already."""
    try:
        task.update(Status.SETTING_UP if call.fresh else Status.QUEUED)
        async with app[CALLS].stream(call, task.input) as events:
            task.update(Status.RUNNING)
            try:
                reply = await events.reply(call.session_id)
            except Problem as problem:
                _failed(task, problem)
                raise
            task.output_bytes = len(reply.output_json())
            task.update(Status.COMPLETED, output=reply.output())
    except Problem as problem:
        if task.status not in TERMINAL:
            _failed(task, problem)
    except asyncio.CancelledError:
        # The worker still finishes a call it has queued, so the session's state stays whole.
        if task.status not in TERMINAL:
            task.update(Status.CANCELLED, error="cancelled")
    except Exception:
        log.exception("task %s failed", task.id, extra={"session": task.session_id})
        task.update(Status.FAILED, error="the gateway failed; see its log")
    finally:
        app[TASKS].finished(task)


def _failed(task: Task, problem: Problem) -> None:
    # CANCELLED: the worker dropped the call, cancelled through another replica.
    task.update(Status.CANCELLED if problem.code == "CANCELLED" else Status.FAILED, error=problem.detail)


async def _find_task(request: web.Request) -> Task | None:
    """A task to read, follow or cancel, all ``get`` on its session (cancelling stops only the
    task): this replica's own, or None for another replica's (its worker is asked)."""
    task_id = request.match_info["id"]
    task = request.app[TASKS].find(task_id)
    where = (task.namespace, "") if task is not None else remotetasks.place(task_id)
    if where is None:
        raise remotetasks.not_found(task_id)
    await authorize(request, where[0] if task is not None else where[1], "get")
    return task


async def _task(request: web.Request) -> web.Response:
    task = await _find_task(request)
    if task is None:
        return _data(await remotetasks.read(request, request.match_info["id"]))
    return _data(task.dto())


async def _status(request: web.Request) -> web.Response:
    """The task's status alone, which the JavaScript SDK polls (``stream: false``) before it
    reads the whole task with ``GET /tasks/{id}`` when the status changes."""
    task = await _find_task(request)
    state = task.dto() if task is not None else await remotetasks.read(request, request.match_info["id"])
    return _data(status_dto(state))


def status_dto(task: JSON) -> JSON:
    """A task's status view: the same ``status`` number as the task itself, so the SDK compares alike."""
    return {key: task[key] for key in ("id", "status", "updated_at")}


async def _stream(request: web.Request) -> web.StreamResponse:
    """The task's state as one NDJSON line per change, heartbeats while it waits, until it ends."""
    task = await _find_task(request)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    task_id, loop = request.match_info["id"], asyncio.get_running_loop()
    sent: JSON | None = None
    written = loop.time()
    try:
        while True:
            changed = task.changed if task is not None else None
            # Another replica's task: its worker holds the news (asked to wait for it a while).
            state = task.dto() if task is not None else await remotetasks.read(request, task_id, HEARTBEAT)
            if state != sent:
                await response.write(json.dumps(state).encode() + b"\n")
                sent, written = state, loop.time()
            elif loop.time() - written >= HEARTBEAT:
                await response.write(b'{"type":"heartbeat"}\n')
                written = loop.time()
            if state["status"] in TERMINAL:
                break
            if changed is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), HEARTBEAT)
    except ConnectionResetError:
        return response  # the SDK reconnects, or asks GET /tasks/{id}
    await response.write_eof()
    return response


async def _cancel(request: web.Request) -> web.Response:
    task = await _find_task(request)
    task_id = request.match_info["id"]
    if task is None:
        cancelled = await remotetasks.cancel(request, task_id)
        return _data(cancelled or await remotetasks.read(request, task_id))
    if task.runner is not None and not task.runner.done():
        task.runner.cancel()
        await asyncio.wait([task.runner])
    # The worker marks the call cancelled (and drops it if still queued), so every replica agrees.
    with contextlib.suppress(Problem):
        await remotetasks.cancel(request, task_id)
    return _data(task.dto())


async def _cancel_running(app: web.Application) -> None:
    running = app[TASKS].running()
    for runner in running:
        runner.cancel()
    if running:
        await asyncio.wait(running)


# -- sessions ---------------------------------------------------------------------------------


def session_dto(body: JSON, shown: JSON | None = None) -> JSON:
    """A Session (as ``shown``: by default ``view(body)``) as the SDK's AppSession: status active, ended or expired."""
    shown = shown or view(body)
    status = "active"
    if shown["phase"] == Phase.EXPIRED:
        status = "expired"
    elif closing(body):
        status = "ended"
    return {
        "id": shown["session_id"],
        "namespace": shown["namespace"],
        "app_id": shown["app"],
        "worker_id": (body.get("status") or {}).get("podName"),
        "status": status,
        "created_at": shown["created_at"],
        "updated_at": shown["last_activity"] or shown["created_at"],
        "expires_at": shown["expires_at"],
        "ended_at": shown["ended_at"],
        "idle_timeout": shown["session_timeout"],
        "call_count": shown["calls"] or 0,
        "last_call_at": shown["last_activity"],  # the worker's last activity: a call or a keepalive
    }


async def _session(request: web.Request, verb: Verb) -> tuple[str, str]:
    """(namespace, id) of the session in the path, once the caller may ``verb`` it there.

    The namespace the caller named; else the one served namespace whose cache holds the id (the
    SDK cannot name one), the default namespace when none does. Ids made with kubectl need not be
    unique across namespaces: an id that several hold is refused until the caller names one.
    """
    session_id, namespace = request.match_info["id"], request[NS]
    if not request[NS_GIVEN]:
        holders = sorted({ns for ns, sid in request.app[CACHE].sessions if sid == session_id})
        if len(holders) > 1:
            raise Problem(
                "SESSION_AMBIGUOUS",
                f'session id "{session_id}" is used in more than one namespace: name the namespace '
                "with ?namespace= or the X-Kubesessions-Namespace header",
                session_id=session_id,
            )
        namespace = holders[0] if holders else namespace
    await authorize(request, namespace, verb)
    return namespace, session_id


async def _list(request: web.Request) -> web.Response:
    namespace = request[NS]
    await authorize(request, namespace, "list")
    cached = sorted(request.app[CACHE].sessions.items())
    return _data([session_dto(body) for (ns, _), body in cached if ns == namespace])


async def _get(request: web.Request) -> web.Response:
    namespace, session_id = await _session(request, "get")
    shown = await request.app[CALLS].describe(namespace, session_id)
    return _data(session_dto(await request.app[SESSIONS].find(namespace, session_id), shown))


async def _end(request: web.Request) -> web.Response:
    namespace, session_id = await _session(request, "delete")
    await request.app[SESSIONS].end(namespace, session_id, request[IDENTITY])
    return web.Response(status=204)


async def _keepalive(request: web.Request) -> web.Response:
    namespace, session_id = await _session(request, "patch")
    shown = await request.app[CALLS].keepalive(namespace, session_id)
    return _data(session_dto(await request.app[SESSIONS].find(namespace, session_id), shown))
