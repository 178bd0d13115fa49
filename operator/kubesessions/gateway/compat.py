"""The inference.sh SDK's wire protocol, so ``inference(api_key=<token>, base_url=<gateway>)`` works unchanged.

The SDK starts a task with ``POST /apps/run``, then follows it: ``GET /tasks/{id}`` and the task's
NDJSON update stream ``GET /tasks/{id}/stream`` until a terminal status. Answers are wrapped as
``{"data": ...}``; errors are the gateway's problem+json, whose ``detail`` the SDK puts in its
exception text (so an expired session reads "session not found").

A task is one call on a session, kept in this gateway process's memory: its id is only known to
the replica that started it. The SDK asks for a task's state at the base URL that started it, so
a gateway Service needs client-IP session affinity when it runs more than one replica.

App references ``namespace/name@version[:function]`` map onto the App ``name``. The namespace part
names the Kubernetes namespace when this gateway serves it (or, serving all, when that namespace
holds the App); any other owner (an inference.sh user name) means the request's namespace. Apps
have no versions here, so ``@version`` is accepted and not checked; the one function is ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from ..models import DNS1123_SUBDOMAIN, Phase
from ..timefmt import rfc3339
from .cache import JSON
from .context import CACHE, FORWARDER, NS, SESSIONS, SETTINGS, authorize, read_body
from .problems import Problem
from .requests import NEW, CreateSessionRequest, describe, parse
from .sessions import closing, gone, view

log = logging.getLogger("kubesessions.gateway")
HEARTBEAT = 10.0  # seconds between heartbeat lines of an idle stream; the SDK gives up after 30 of them
REF = re.compile(
    r"^(?:(?P<owner>[^/@:]+)/)?(?P<name>[^/@:]+)(?:@(?P<version>[^/@:]+))?(?::(?P<function>[^/@:]+))?$"
)
# Fields of the SDK's run request that ask for hosted-service features this gateway has no counterpart for.
UNSUPPORTED = ("app_id", "version_id", "infra", "workers", "webhook", "run_at", "metadata")


class Status(IntEnum):
    """The SDK's TaskStatus values this gateway uses."""

    QUEUED = 2
    SETTING_UP = 6
    RUNNING = 7
    COMPLETED = 10
    FAILED = 11
    CANCELLED = 12


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


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
    """Tasks by id; finished ones beyond ``keep`` are forgotten, oldest first."""

    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self._tasks: OrderedDict[str, Task] = OrderedDict()

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task
        finished = [t.id for t in self._tasks.values() if t.status in TERMINAL]
        for task_id in finished[: max(0, len(finished) - self.keep)]:
            del self._tasks[task_id]

    def get(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise Problem(
                "TASK_NOT_FOUND",
                f"task not found: {task_id} (a task is known only to the gateway replica "
                "that started it, and only for its last 1000 finished tasks)",
                task_id=task_id,
            )
        return task

    def running(self) -> list[asyncio.Task[None]]:
        return [t.runner for t in self._tasks.values() if t.runner is not None and not t.runner.done()]


TASKS = web.AppKey("compat_tasks", Tasks)


def register(app: web.Application) -> None:
    app[TASKS] = Tasks()
    app.on_cleanup.append(_cancel_running)
    app.router.add_post("/apps/run", _run)
    app.router.add_get("/tasks/{id}", _task)
    app.router.add_get("/tasks/{id}/stream", _stream)
    app.router.add_post("/tasks/{id}/cancel", _cancel)
    app.router.add_get("/sessions", _list)
    app.router.add_get("/sessions/{id}", _get)
    app.router.add_delete("/sessions/{id}", _end)
    app.router.add_post("/sessions/{id}/keepalive", _keepalive)


def _data(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"data": data}, status=status)


def _target_app(request: web.Request, ref: str) -> tuple[str, str]:
    """(namespace, App name) of an SDK app reference."""
    match = REF.match(ref)
    name = match["name"] if match else ""
    if not match or not re.fullmatch(DNS1123_SUBDOMAIN, name):
        raise Problem("VALIDATION", f'app: "{ref}" is not an app reference (namespace/name@version or name)')
    if match["function"] not in (None, "run"):
        raise Problem("VALIDATION", f'app: function "{match["function"]}": an App has one function, run')
    owner, settings = match["owner"], request.app[SETTINGS]
    if owner and (
        owner in settings.namespaces or (not settings.namespaces and (owner, name) in request.app[CACHE].apps)
    ):
        return owner, name
    return request[NS], name


async def _run(request: web.Request) -> web.Response:
    body = parse(AppRunRequest, await read_body(request))
    refused = [name for name in UNSUPPORTED if getattr(body, name) is not None]
    if refused:
        raise Problem("VALIDATION", f"not supported by kube-sessions: {', '.join(refused)}")
    if body.function not in (None, "run"):
        raise Problem("VALIDATION", f'function "{body.function}": an App has one function, run')
    namespace, name = _target_app(request, body.app)
    identity = await authorize(request, namespace)
    sessions = request.app[SESSIONS]
    fresh = body.session in (None, NEW)
    if fresh:
        try:
            spec = CreateSessionRequest(app=name, session_timeout=body.session_timeout, config=body.setup)
        except ValidationError as exc:
            raise Problem("VALIDATION", describe(exc)) from None
        session_id = await sessions.create(namespace, name, spec, identity)
    else:
        session_id = str(body.session)
        # Checked now, so an ended session fails the run request itself with "session not found".
        found = await sessions.find(namespace, session_id)
        if closing(found):
            raise gone(found)
    task = Task("t-" + secrets.token_hex(12), namespace, name, session_id, body.input)
    request.app[TASKS].add(task)
    task.runner = asyncio.create_task(_execute(request.app, task, fresh=fresh, one_shot=body.session is None))
    return _data(task.dto())


async def _execute(app: web.Application, task: Task, *, fresh: bool, one_shot: bool) -> None:
    """The task's call, as ``POST /v1/run`` makes it: wait for the worker, call it, close a one-shot session."""
    sessions, key = app[SESSIONS], (task.namespace, task.session_id)
    try:
        task.update(Status.SETTING_UP if fresh else Status.QUEUED)
        target = await sessions.target(task.namespace, task.session_id, task.app, ours=fresh)
        task.update(Status.RUNNING)
        reply = await app[FORWARDER].run(key, target, task.input, call_id=task.id)
        task.update(Status.COMPLETED, output=json.loads(reply.body(task.session_id))["output"])
    except Problem as problem:
        task.update(Status.FAILED, error=problem.detail)
    except asyncio.CancelledError:
        # The worker still finishes a call it has queued, so the session's state stays whole.
        task.update(Status.CANCELLED, error="cancelled")
    except Exception:
        log.exception("task %s failed", task.id, extra={"session": task.session_id})
        task.update(Status.FAILED, error="the gateway failed; see its log")
    finally:
        if one_shot:
            with contextlib.suppress(Problem):
                await sessions.close(task.namespace, task.session_id, "one-shot call done")


async def _find_task(request: web.Request) -> Task:
    task = request.app[TASKS].get(request.match_info["id"])
    await authorize(request, task.namespace)
    return task


async def _task(request: web.Request) -> web.Response:
    return _data((await _find_task(request)).dto())


async def _stream(request: web.Request) -> web.StreamResponse:
    """The task's state as one NDJSON line per change, heartbeats while it waits, until it ends."""
    task = await _find_task(request)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    sent: JSON | None = None
    try:
        while True:
            changed, state = task.changed, task.dto()
            if state != sent:
                await response.write(json.dumps(state).encode() + b"\n")
                sent = state
            if task.status in TERMINAL:
                break
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT)
            except TimeoutError:
                await response.write(b'{"type":"heartbeat"}\n')
    except ConnectionResetError:
        return response  # the SDK reconnects, or asks GET /tasks/{id}
    await response.write_eof()
    return response


async def _cancel(request: web.Request) -> web.Response:
    task = await _find_task(request)
    if task.runner is not None and not task.runner.done():
        task.runner.cancel()
        await asyncio.wait([task.runner])
    return _data(task.dto())


async def _cancel_running(app: web.Application) -> None:
    running = app[TASKS].running()
    for runner in running:
        runner.cancel()
    if running:
        await asyncio.wait(running)


# -- sessions ---------------------------------------------------------------------------------


def session_dto(body: JSON) -> JSON:
    """A Session as the SDK's AppSession: status active, ended or expired."""
    shown = view(body)
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


async def _session(request: web.Request) -> tuple[str, str]:
    """(namespace, id) of the session in the path: ids are unique across namespaces, so the cache knows where."""
    session_id = request.match_info["id"]
    namespace = next((ns for ns, sid in request.app[CACHE].sessions if sid == session_id), request[NS])
    await authorize(request, namespace)
    return namespace, session_id


async def _list(request: web.Request) -> web.Response:
    namespace = request[NS]
    cached = sorted(request.app[CACHE].sessions.items())
    return _data([session_dto(body) for (ns, _), body in cached if ns == namespace])


async def _get(request: web.Request) -> web.Response:
    namespace, session_id = await _session(request)
    return _data(session_dto(await request.app[SESSIONS].find(namespace, session_id)))


async def _end(request: web.Request) -> web.Response:
    namespace, session_id = await _session(request)
    await request.app[SESSIONS].end(namespace, session_id, await authorize(request, namespace))
    return web.Response(status=204)


async def _keepalive(request: web.Request) -> web.Response:
    namespace, session_id = await _session(request)
    sessions = request.app[SESSIONS]
    await request.app[FORWARDER].keepalive(await sessions.target(namespace, session_id, None))
    return _data(session_dto(await sessions.find(namespace, session_id)))
