"""inference.sh tasks read, followed and cancelled through any gateway replica.

A task's id carries where its call runs: ``<call id>.<namespace/session in base32>``. The call
id is the task's ``Idempotency-Key`` on the worker, which keeps the call's outcome, so a replica
that did not start the task asks the session's worker (``GET /calls/{id}``) instead of a shared
store; once a one-shot task's session has closed (its worker gone), it reads the outcome the
Session recorded (:mod:`.oneshot`). The replica that started it answers from memory, as before.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import logging
from typing import Any

from aiohttp import web

from kubesessions.api.names import JSON, ONE_SHOT_ANNOTATION
from kubesessions.common.timefmt import parse_rfc3339
from kubesessions.gateway import oneshot
from kubesessions.gateway.context import CACHE, FORWARDER, SESSIONS
from kubesessions.gateway.forward import Target
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.sessions import closing, gone
from kubesessions.gateway.taskstatus import Status

log = logging.getLogger("kubesessions.gateway")
# While another replica hands a call to the worker, a reader looks again this often.
HANDOVER_LOOK = 0.2
# The replica that took a one-shot task hands its call over as soon as its session is Ready (it
# waits on its watch). A call still missing this long after that was lost with that replica.
HANDOVER_DEADLINE = 30.0


def task_id(call_id: str, namespace: str, session_id: str) -> str:
    where = base64.b32encode(f"{namespace}/{session_id}".encode()).decode().rstrip("=").lower()
    return f"{call_id}.{where}"


def place(task: str) -> tuple[str, str, str] | None:
    """(call id, namespace, session) from a task id; None for one that is not ours."""
    call_id, dot, where = task.partition(".")
    if not dot or not call_id:
        return None
    try:
        text = base64.b32decode(where.upper() + "=" * (-len(where) % 8)).decode()
    except (binascii.Error, ValueError):
        return None
    namespace, slash, session_id = text.partition("/")
    return (call_id, namespace, session_id) if slash and namespace and session_id else None


def not_found(task: str) -> Problem:
    return Problem("TASK_NOT_FOUND", f"task not found: {task}", task_id=task)


def from_call(task: str, namespace: str, session_id: str, app: str | None, call: JSON) -> JSON:
    """A task's SDK view from the worker's view of its call (or the record of a one-shot one)."""
    output: Any = None
    error = None
    left_out = oneshot.left_out(call) if call["state"] == "finished" else None
    if left_out is not None:
        status, error = Status.COMPLETED, left_out
    elif call["state"] != "finished":
        status = Status.RUNNING if call["state"] == "running" else Status.QUEUED
    elif call["cancelled"]:
        status, error = Status.CANCELLED, "cancelled"
    elif call["error"] is not None:
        status, error = Status.FAILED, call["error"].get("detail")
    else:
        status = Status.COMPLETED
        output = call["outputs"] if call["streamed"] else (call["outputs"] or [None])[0]
    return dto(task, namespace, session_id, app, status, output, error)


def dto(
    task: str, namespace: str, session_id: str, app: str | None, status: int, output: Any, error: str | None
) -> JSON:
    return {
        "id": task,
        "app": app,
        "namespace": namespace,
        "session_id": session_id,
        "status": status,
        "input": None,  # kept by the replica that took the request only
        "output": output,
        "error": error,
        "logs": None,
        "created_at": None,  # known to the replica that took the request only
        "updated_at": None,
    }


async def _locate(request: web.Request, task: str) -> tuple[str, str, str, JSON, Target | None]:
    """The task's call id, namespace, session, its Session, and its worker if Ready."""
    where = place(task)
    if where is None:
        raise not_found(task)
    call_id, namespace, session_id = where
    sessions = request.app[SESSIONS]
    body = await sessions.find(namespace, session_id)
    return call_id, namespace, session_id, body, sessions.ready(namespace, session_id)


async def read(request: web.Request, task: str, wait: float = 0.0) -> JSON:
    """The task as its session's worker knows it; waits up to ``wait`` seconds for news."""
    call_id, namespace, session_id, body, target = await _locate(request, task)
    sessions = request.app[SESSIONS]
    app = (body.get("spec") or {}).get("app")
    key = (namespace, session_id)
    if target is None and wait and not closing(body):
        await request.app[CACHE].wait(key, lambda: sessions.ready(namespace, session_id), wait)
        body = await sessions.find(namespace, session_id)
        target = sessions.ready(namespace, session_id)
    if target is None:
        if closing(body):  # its worker is gone: a one-shot call's Session recorded its outcome
            recorded = oneshot.recorded(body, call_id)
            if recorded is not None:
                return from_call(task, namespace, session_id, app, recorded)
            return dto(task, namespace, session_id, app, Status.FAILED, None, gone(body).detail)
        return dto(task, namespace, session_id, app, Status.SETTING_UP, None, None)
    try:
        call = await request.app[FORWARDER].call_state(target, call_id, wait)
    except Problem as problem:
        if problem.code != "CALL_NOT_FOUND":
            raise
        if _handover_lost(body, call_id):
            return await _end_lost(request, task, target, body, call_id)
        # The replica that took the task has not handed the call to the worker yet.
        if wait:
            await asyncio.sleep(HANDOVER_LOOK)
        return dto(task, namespace, session_id, app, Status.QUEUED, None, None)
    return from_call(task, namespace, session_id, app, call)


def _handover_lost(body: JSON, call_id: str) -> bool:
    """A one-shot task's call that its session's worker has not had long after it was Ready."""
    annotations = body["metadata"].get("annotations") or {}
    ready = parse_rfc3339((body.get("status") or {}).get("readyAt"))
    return (
        annotations.get(ONE_SHOT_ANNOTATION) == call_id
        and ready is not None
        and (datetime.datetime.now(datetime.UTC) - ready).total_seconds() > HANDOVER_DEADLINE
    )


async def _end_lost(request: web.Request, task: str, target: Target, body: JSON, call_id: str) -> JSON:
    """End a one-shot task whose replica was lost before it handed the call over: cancel the
    call on the worker (should it still come, it never runs) and close the session with that
    outcome, which every replica then reads."""
    namespace, session_id = body["metadata"]["namespace"], body["metadata"]["name"]
    log.warning(
        "task %s: its call never reached the worker %gs after the session was Ready; the gateway "
        "replica that took it is taken as lost, and the call is cancelled",
        task,
        HANDOVER_DEADLINE,
        extra={"session": session_id},
    )
    call = await request.app[FORWARDER].cancel_call(target, call_id)
    if call.get("state") == "finished":
        settings = request.app[SESSIONS].settings
        outcome = oneshot.record(call, None, settings.one_shot_outcome_bytes)
        await request.app[SESSIONS].close(namespace, session_id, "one-shot call lost in hand-over", outcome)
    return from_call(task, namespace, session_id, (body.get("spec") or {}).get("app"), call)


async def cancel(request: web.Request, task: str) -> JSON | None:
    """Cancel the task's call on its worker; None when its worker is gone (nothing to cancel)."""
    call_id, namespace, session_id, body, target = await _locate(request, task)
    if target is None:
        if closing(body):
            raise gone(body)
        return None
    call = await request.app[FORWARDER].cancel_call(target, call_id)
    return from_call(task, namespace, session_id, (body.get("spec") or {}).get("app"), call)
