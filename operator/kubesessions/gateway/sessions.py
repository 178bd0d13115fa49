"""Sessions as the gateway sees them: find one (cache first), start one, wait for it, close it."""

from __future__ import annotations

import datetime
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api import tokens
from kubesessions.api.models import (
    DEFAULT_SETUP_TIMEOUT,
    FINISHED_PHASES,
    AppSpec,
    Phase,
    is_dns1123_subdomain,
)
from kubesessions.api.names import (
    API_VERSION,
    CLOSE_ANNOTATION,
    CREATED_BY_ANNOTATION,
    JSON,
    KEEPALIVE_ANNOTATION,
    ONE_SHOT_ANNOTATION,
    OUTCOME_ANNOTATION,
    RESUME_REQUESTED,
    SUSPEND_REQUESTED,
)
from kubesessions.common.timefmt import parse_rfc3339, rfc3339
from kubesessions.gateway import oneshot
from kubesessions.gateway.auth import Identity
from kubesessions.gateway.cache import Cache, Key
from kubesessions.gateway.forward import Target
from kubesessions.gateway.problems import Problem, api_server, ended, not_found
from kubesessions.gateway.requests import new_session_id, session_spec
from kubesessions.kube.kubeapi import Kube, group_path

log = logging.getLogger("kubesessions.gateway")


@dataclass
class GatewaySettings:
    namespaces: list[str] = field(default_factory=list)  # served and watched; empty: all
    default_namespace: str = "default"
    auth: str = "kubernetes"  # or "none"
    host: str = "0.0.0.0"  # noqa: S104 - a Service sends callers here
    port: int = 8000
    processes: int = 1  # serving processes sharing the port (SO_REUSEPORT), each with its own watches
    max_body_bytes: int = 8 * 1024 * 1024
    start_timeout: float = 120.0  # seconds a new session may take to become Ready
    call_timeout: float = 660.0  # seconds without a byte from the worker; its own limit is 600
    auth_ttl: float = 10.0
    # Session tokens are derived from it; the operator must hold the same (see api/tokens.py).
    token_key: bytes = field(default_factory=tokens.new_key, repr=False)
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed (cors.py); none: off
    one_shot_outcome_bytes: int = 16 * 1024  # of a one-shot call's outcome kept on its Session
    task_bytes: int = 64 * 1024 * 1024  # of finished inference.sh tasks a replica keeps in memory


def _status(body: JSON) -> JSON:
    status: JSON = body.get("status") or {}
    return status


def view(body: JSON) -> JSON:
    """A Session as the API shows it."""
    meta, status = body["metadata"], _status(body)
    return {
        "session_id": meta["name"],
        "namespace": meta["namespace"],
        "app": (body.get("spec") or {}).get("app"),
        "phase": status.get("phase") or Phase.PENDING.value,
        "reason": status.get("reason"),
        "message": status.get("message"),
        "session_timeout": status.get("sessionTimeout"),
        "created_at": meta.get("creationTimestamp"),
        "ready_at": status.get("readyAt"),
        "last_activity": status.get("lastActivityTime"),
        "expires_at": status.get("expiresAt"),
        "ended_at": status.get("endedAt"),
        "calls": status.get("calls"),
        "gpus": status.get("gpus"),
        "suspended_at": (status.get("suspension") or {}).get("suspendedAt"),
    }


def live(body: JSON, last_activity: str | None, calls: Any = None) -> JSON:
    """``view`` with the worker's own figures: its last activity, the idle deadline that follows
    from it (the operator records both only when it looks, so the stored ones lag), its calls."""
    shown = view(body)
    last = parse_rfc3339(last_activity)
    if last is None:
        return shown
    ready = parse_rfc3339(shown["ready_at"])
    last = max(last, ready) if ready is not None else last  # idleness counts from Ready at the earliest
    shown["last_activity"] = rfc3339(last)
    if isinstance(shown["session_timeout"], int):
        shown["expires_at"] = rfc3339(last + datetime.timedelta(seconds=shown["session_timeout"]))
    if isinstance(calls, int):
        shown["calls"] = calls
    return shown


# How long a call whose worker cannot be reached waits to learn that its session has ended.
ENDED_WAIT = 2.0
END_WAIT = 10.0  # the most a caller's close waits for the operator to end the session
# Phases of a session whose worker is stopped or stopping with its state saved: a call wakes it.
ASLEEP = frozenset({Phase.SUSPENDING, Phase.SUSPENDED, Phase.RESUMING})


def asleep(body: JSON) -> bool:
    return _status(body).get("phase") in ASLEEP


def finished(body: JSON) -> bool:
    """The operator has ended the session (closed, expired or failed)."""
    return _status(body).get("phase") in FINISHED_PHASES


def closing(body: JSON) -> bool:
    """Finished, or asked to close: either way no call may start on it any more."""
    annotations = body["metadata"].get("annotations") or {}
    return finished(body) or CLOSE_ANNOTATION in annotations


def gone(body: JSON) -> Problem:
    """410 for a tombstone (expired, or closed or failed) or a session being closed."""
    status, name = _status(body), body["metadata"]["name"]
    if status.get("phase") not in FINISHED_PHASES:
        why = (body["metadata"].get("annotations") or {}).get(CLOSE_ANNOTATION) or "closing"
        return ended("SESSION_ENDED", name, "has been closed", f"ClosedByUser: {why}")
    why = f"{status.get('reason') or status.get('phase')}: {status.get('message') or ''}".rstrip(": ")
    if status.get("phase") == Phase.EXPIRED:
        return ended("SESSION_EXPIRED", name, "has expired", why)
    return ended("SESSION_ENDED", name, "has ended", why)


def _check_app(body: JSON, app: str | None) -> None:
    runs = (body.get("spec") or {}).get("app")
    if app is not None and runs != app:
        name = body["metadata"]["name"]
        raise Problem("APP_MISMATCH", f'session {name} runs app "{runs}", not "{app}"', session_id=name)


class Sessions:
    def __init__(self, cache: Cache, kube: Kube, settings: GatewaySettings) -> None:
        self.cache, self.settings, self.kube = cache, settings, kube
        self.created = 0
        # A session's token is derived once (an HMAC) and then looked up on each of its calls;
        # the uid is part of the key, so a Session made again under the same name gets its own.
        self._token = functools.lru_cache(maxsize=4096)(
            functools.partial(tokens.session_token, settings.token_key)
        )

    async def find(self, namespace: str, session_id: str) -> JSON:
        """The Session from the cache; only an id the cache lacks costs an API read."""
        if not is_dns1123_subdomain(session_id):
            raise not_found(session_id, namespace)
        body = self.cache.sessions.get((namespace, session_id))
        if body is None:
            body = await self._read("sessions", namespace, session_id)
            if body is None:
                raise not_found(session_id, namespace)
        return body

    async def target(self, namespace: str, session_id: str, app: str | None, *, ours: bool = False) -> Target:
        """Where to send calls: the live worker's pod IP and token, waiting (bounded) until it is Ready.

        ``ours``: the session was created for this request, so a session that cannot start is closed.
        """
        body = await self.find(namespace, session_id)
        _check_app(body, app)
        key = (namespace, session_id)
        wait = self.settings.start_timeout
        if asleep(body) and not closing(body):
            wait = max(wait, await self.wake(namespace, session_id))
        # A Ready session (every call but a new session's first) needs no waiter set up.
        body = self._usable(key) or await self.cache.wait(key, lambda: self._usable(key), wait) or body
        status = _status(body)
        if closing(body):
            if ours:
                raise Problem(
                    "WORKER_UNAVAILABLE",
                    f"session {session_id} could not start: {status.get('reason')}: {status.get('message')}",
                    session_id=session_id,
                    reason=status.get("reason"),
                )
            raise gone(body)
        if status.get("phase") != Phase.READY or not status.get("podIP"):
            why = f"{status.get('phase') or 'Pending'} ({status.get('reason') or 'no reason yet'}: {status.get('message') or ''})"
            if ours:
                await self.close(namespace, session_id, f"not Ready within {wait:g}s")
            raise Problem(
                "WORKER_UNAVAILABLE",
                f"session {session_id} is not Ready after {wait:g}s: {why}",
                session_id=session_id,
                reason=status.get("reason"),
            )
        return Target(session_id, status["podIP"], self.token(body))

    async def wake(self, namespace: str, session_id: str) -> float:
        """Ask the operator to resume a suspended (or suspending) session, once: the
        ``resume-requested`` annotation. Returns how long to wait for it to be Ready: its App's
        setupTimeout (a resume may start a new worker, which runs the app's setup)."""
        body = await self.find(namespace, session_id)
        annotations = body["metadata"].get("annotations") or {}
        if (
            _status(body).get("phase") in (Phase.SUSPENDED, Phase.SUSPENDING)
            and RESUME_REQUESTED not in annotations
        ):
            await self.annotate(namespace, session_id, {RESUME_REQUESTED: rfc3339()}, "waking")
        app = (body.get("spec") or {}).get("app")
        app_body = self.cache.apps.get((namespace, app)) if app else None
        setup = ((app_body or {}).get("spec") or {}).get("setupTimeout")
        return float(setup if isinstance(setup, int) else DEFAULT_SETUP_TIMEOUT)

    async def suspend(self, namespace: str, session_id: str) -> JSON:
        """Ask the operator to suspend the session now (``suspend-requested``); it does once no
        call runs. A session asleep already, or ended, is left as it is."""
        body = await self.find(namespace, session_id)
        if closing(body):
            raise gone(body)
        if not asleep(body) and SUSPEND_REQUESTED not in (body["metadata"].get("annotations") or {}):
            body = await self.annotate(namespace, session_id, {SUSPEND_REQUESTED: rfc3339()}, "suspending")
        return view(body)

    async def resume(self, namespace: str, session_id: str) -> JSON:
        """Ask the operator to resume the session (answers at once; a call would wait for it)."""
        body = await self.find(namespace, session_id)
        if closing(body):
            raise gone(body)
        if asleep(body):
            await self.wake(namespace, session_id)
        return view(self.cache.sessions.get((namespace, session_id)) or body)

    async def keep_asleep(self, namespace: str, session_id: str) -> JSON | None:
        """A keepalive of a suspended session: it moves the session's expiry (the operator does,
        from the ``keepalive`` annotation) without waking it. None: the session is not suspended."""
        body = await self.find(namespace, session_id)
        if _status(body).get("phase") not in (Phase.SUSPENDED, Phase.SUSPENDING) or closing(body):
            return None
        return view(
            await self.annotate(namespace, session_id, {KEEPALIVE_ANNOTATION: rfc3339()}, "keepalive")
        )

    async def annotate(self, namespace: str, session_id: str, annotations: dict[str, str], why: str) -> JSON:
        """Merge ``annotations`` into the Session's; the Session as written."""
        patch = {"metadata": {"annotations": annotations}}
        try:
            with api_server(f"{why} session {session_id}"):
                result = await self.kube.merge_patch(
                    group_path(API_VERSION, namespace, "sessions", session_id), patch
                )
        except ApiException as exc:
            if exc.status == 404:
                raise not_found(session_id, namespace) from None
            raise
        self.cache.seen("sessions", result)
        log.info("session %s: %s", session_id, why, extra={"session": session_id, "namespace": namespace})
        return result

    def check(self, body: JSON, app: str | None) -> None:
        """An existing session may take a call for ``app`` (when named): it runs it, and has not ended."""
        _check_app(body, app)
        if closing(body):
            raise gone(body)

    async def explain_unavailable(self, namespace: str, session_id: str, problem: Problem) -> Problem:
        """A worker that cannot be reached has most often just been ended (an idle cull or a
        close: the worker goes first, its Session's status follows a moment later). Wait for
        that on the watch, bounded, so the caller learns the session ended (410, which clients
        recover from) rather than that a worker is unavailable (503)."""
        key = (namespace, session_id)

        def ended() -> JSON | None:
            body = self.cache.sessions.get(key)
            return body if body is not None and closing(body) else None

        body = ended() or await self.cache.wait(key, ended, ENDED_WAIT)
        return gone(body) if body is not None else problem

    def ready(self, namespace: str, session_id: str) -> Target | None:
        """The worker of a Ready session, without waiting; None when there is none to ask."""
        key = (namespace, session_id)
        body = self._usable(key)
        if body is None or closing(body):
            return None
        return Target(session_id, _status(body)["podIP"], self.token(body))

    def token(self, body: JSON) -> str:
        """The session's token, derived (the gateway reads no Secret)."""
        meta = body["metadata"]
        token: str = self._token(meta["namespace"], meta["name"], meta["uid"])
        return token

    def _usable(self, key: Key) -> JSON | None:
        body = self.cache.sessions.get(key)
        if body is None:
            return None
        if closing(body):
            return body
        status = _status(body)
        if status.get("phase") == Phase.READY and status.get("podIP"):
            return body
        return None

    async def create(
        self,
        namespace: str,
        app: str | None,
        request: Any,
        identity: Identity,
        call_id: str | None = None,
        one_shot: bool = False,
    ) -> str:
        """Create a Session for ``app`` (checked to exist first, so a bad request creates nothing).

        With a ``call_id`` the name is derived from it: a retry finds the session already there,
        which may be a one-shot call's closed session that recorded the call's outcome. A
        ``one_shot`` session is marked with its call's id, so any replica knows whose it is."""
        if app is None:
            raise Problem(
                "VALIDATION", "app: required to start a session (the name of an App in the namespace)"
            )
        app_body = self.cache.apps.get((namespace, app)) or await self._read("apps", namespace, app)
        if app_body is None:
            raise Problem("APP_NOT_FOUND", f'app "{app}" not found in namespace "{namespace}"', app=app)
        spec = session_spec(request, AppSpec.model_validate(app_body.get("spec") or {}))
        name = new_session_id(None if call_id is None else f"{namespace}/{identity.username}/{call_id}")
        annotations = {CREATED_BY_ANNOTATION: identity.username[:253]}
        if one_shot and call_id is not None:
            annotations[ONE_SHOT_ANNOTATION] = call_id
        body = {
            "apiVersion": API_VERSION,
            "kind": "Session",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec.model_dump(exclude_none=True),
        }
        try:
            with api_server(f"creating session {name}"):
                created = await self.kube.create(group_path(API_VERSION, namespace, "sessions"), body)
        except ApiException as exc:
            if exc.status == 409 and call_id is not None:
                log.info("session %s: a retried call finds it", name, extra={"session": name})
                found = await self.find(namespace, name)
                if closing(found) and oneshot.recorded(found, call_id) is None:
                    raise gone(found) from None
                return name
            if exc.status in (400, 422):
                raise Problem(
                    "VALIDATION", f"the API server refused the session: {exc.reason}", status=exc.status
                ) from None
            raise
        self.cache.seen("sessions", created)
        self.created += 1
        log.info(
            "session %s created for %s (app %s)",
            name,
            identity.username,
            app,
            extra={"session": name, "namespace": namespace},
        )
        return name

    async def end(self, namespace: str, session_id: str, identity: Identity) -> None:
        """A caller's close: a session already finished or closing is left as it is. Answered
        once the operator has ended it (bounded): another replica's cache, behind by a watch
        event, would otherwise still forward the caller's next call to the worker (seen under
        load in tests/compat/test_js_sdk.py: a call through replica B after an end through A ran)."""
        body = await self.find(namespace, session_id)
        if closing(body):
            return
        await self.close(namespace, session_id, f"closed through the gateway by {identity.username}")
        key = (namespace, session_id)

        def ended() -> bool | None:
            body = self.cache.sessions.get(key)
            return True if body is None or finished(body) else None

        await self.cache.wait(key, ended, END_WAIT)

    async def close(self, namespace: str, session_id: str, why: str, outcome: str | None = None) -> None:
        """Ask the operator to close the session (it deletes the worker and keeps a tombstone);
        a one-shot call's ``outcome`` is recorded by the same write."""
        annotations = {CLOSE_ANNOTATION: why[:1024]}
        if outcome is not None:
            annotations[OUTCOME_ANNOTATION] = outcome
        await self.annotate(namespace, session_id, annotations, f"closing: {why}")

    async def _read(self, plural: str, namespace: str, name: str) -> JSON | None:
        try:
            with api_server(f"reading {plural} {name}"):
                body = await self.kube.get(group_path(API_VERSION, namespace, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self.cache.seen(plural, body)
        return body
