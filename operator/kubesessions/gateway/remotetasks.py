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
from typing import Any

from aiohttp import web

from kubesessions.api.names import JSON
from kubesessions.gateway import oneshot
from kubesessions.gateway.context import CACHE, FORWARDER, SESSIONS
from kubesessions.gateway.forward import Target
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.sessions import closing, gone
from kubesessions.gateway.taskstatus import Status

# While another replica hands a call to the worker, a reader looks again this often.
HANDOVER_LOOK = 0.2


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
        # The replica that took the task has not handed the call to the worker yet.
        if wait:
            await asyncio.sleep(HANDOVER_LOOK)
        return dto(task, namespace, session_id, app, Status.QUEUED, None, None)
    return from_call(task, namespace, session_id, app, call)


async def cancel(request: web.Request, task: str) -> JSON | None:
    """Cancel the task's call on its worker; None when its worker is gone (nothing to cancel)."""
    call_id, namespace, session_id, body, target = await _locate(request, task)
    if target is None:
        if closing(body):
            raise gone(body)
        return None
    call = await request.app[FORWARDER].cancel_call(target, call_id)
    return from_call(task, namespace, session_id, (body.get("spec") or {}).get("app"), call)
