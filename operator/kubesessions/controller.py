"""The Session controller: level-based reconcile of each Session from what the watches saw.

Handlers (see :mod:`kubesessions.handlers`) only record the latest objects and enqueue the
Session's key; :meth:`Controller.reconcile` then makes the world match, one key at a time,
and says when to look again (idle deadline, max lifetime, tombstone retention).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from . import accounting, builders, idle
from .builders import CLOSE_ANNOTATION
from .kubeobjects import MERGE_PATCH, newer
from .models import GROUP, VERSION, AppSpec, Phase, SessionSpec, effective_timeout
from .status import (
    Verdict,
    creating_settle,
    desired_status,
    finished,
    judge,
    status_patch,
)
from .timefmt import parse_rfc3339, rfc3339
from .workqueue import WorkQueue

log = logging.getLogger("kubesessions.operator")
JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

KEEPALIVE_ANNOTATION = "kubesessions.io/keepalive"
KEEPALIVE_SEEN = "kubesessions.io/keepalive-seen"
# Seconds until a look at a Session whose pod was just created, should its watch event not come.
CREATED_LOOK_AGAIN = 2.0


@dataclass
class OperatorSettings:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    retention: float = 600.0  # seconds a finished Session stays as a tombstone
    termination_grace: int = 30
    workers: int = 32  # reconciles wait on the API, not the CPU
    worker_timeout: float = 2.0  # seconds for one /status call to a worker
    unreachable_limit: int = 5  # failed /status calls in a row before WorkerLost
    idle_grace: int = 60  # the worker exits by itself when idle past timeout + this
    orphan_sweep_interval: float = 300.0


@dataclass
class Tracked:
    """What the controller remembers about one Session between reconciles."""

    uid: str = ""
    children: set[str] = field(default_factory=set)  # kinds known to exist: secret, service, pod
    token: str | None = None
    keepalive: str | None = None
    activity_written_at: float = 0.0  # monotonic
    unreachable: int = 0
    retry_at: float = 0.0  # monotonic: no worker call before this while it is unreachable
    pod_created_at: float | None = None  # monotonic, when this operator created the pod


def _from_ms(ms: int) -> datetime.datetime:
    """Exact: no float round trip, so equal milliseconds give equal strings."""
    return datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC) + datetime.timedelta(
        milliseconds=ms % 1000
    )


def _ref(body: JSON) -> builders.SessionRef:
    meta = body["metadata"]
    return builders.SessionRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


class Controller:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.settings = settings
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.sessions: dict[Key, JSON] = {}
        self.pods: dict[Key, JSON] = {}
        self.apps: dict[Key, JSON] = {}
        self.tracked: dict[Key, Tracked] = {}
        self.writes: Counter[str] = Counter()
        self.accounting = accounting.Accounting()
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=settings.workers)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        await self.http.close()
        await self.api.close()

    # -- fed by the watches ---------------------------------------------------------------

    def session_seen(self, body: JSON, deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.sessions.pop(key, None)
            self.tracked.pop(key, None)
            self.accounting.forget(key)
            self.queue.forget(key)
            return
        tracked = self.tracked.get(key)
        if tracked is None or tracked.uid != body["metadata"]["uid"]:
            self.tracked[key] = Tracked(uid=body["metadata"]["uid"])
        if newer(body, self.sessions.get(key)):
            self.sessions[key] = body
        self.queue.add(key)

    def pod_seen(self, body: JSON, deleted: bool) -> None:
        session = (body.get("metadata", {}).get("labels") or {}).get(builders.SESSION_LABEL)
        if not session:
            return
        key = (body["metadata"]["namespace"], session)
        if deleted:
            if self.pods.get(key, {}).get("metadata", {}).get("uid") == body["metadata"]["uid"]:
                self.pods.pop(key, None)
            if key in self.tracked:
                self.tracked[key].children.discard("pod")
        elif newer(body, self.pods.get(key)):
            self.pods[key] = body
        self.queue.add(key)

    def app_seen(self, body: JSON, deleted: bool) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if deleted:
            self.apps.pop(key, None)
        else:
            self.apps[key] = body
        for skey, session in self.sessions.items():
            if skey[0] == key[0] and session.get("spec", {}).get("app") == key[1]:
                self.queue.add(skey)

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        body = self.sessions.get(key)
        if body is None:
            return None
        tracked = self.tracked.setdefault(key, Tracked(uid=body["metadata"]["uid"]))
        status: JSON = body.get("status") or {}
        if finished(status.get("phase")):
            return await self._tombstone(key, body, tracked)
        annotations = body["metadata"].get("annotations") or {}
        if CLOSE_ANNOTATION in annotations:
            reason = annotations[CLOSE_ANNOTATION] or "closed on request"
            await self._last_reading(key, body, tracked)
            await self._finish(key, body, Verdict(Phase.CLOSED, "ClosedByUser", reason))
            return self.settings.retention
        spec = SessionSpec.model_validate(body.get("spec") or {})
        app_name = spec.app
        app: AppSpec | None = None
        if app_name is not None:
            app_body = self.apps.get((key[0], app_name)) or await self._read("apps", key[0], app_name)
            if app_body is None:
                await self._write_status(
                    key,
                    body,
                    Verdict(Phase.PENDING, "AppNotFound", f'App "{app_name}" not found in {key[0]}'),
                    None,
                )
                return None  # an App event wakes it
            app = AppSpec.model_validate(app_body.get("spec") or {})
        timeout = effective_timeout(spec, app)
        ref = _ref(body)
        # All known from the start, so the first status write carries them (not one write each).
        extra_status: JSON = {
            "sessionTimeout": timeout,
            "gpus": builders.gpu_summary(app, spec),
            "endpoint": builders.endpoint(ref),
            "podName": ref.name,
        }
        pod = self.pods.get(key)
        if pod is None and status.get("phase") in (Phase.STARTING, Phase.READY):
            # Before calling the worker lost, ask the API: after a restart the pod watch may
            # not have caught up with the Session watch yet.
            pod = await self._read("pods", key[0], key[1])
        if pod is not None:
            tracked.children.add("pod")
        # A worker that has been running is never replaced: its state is gone with it.
        may_create_pod = pod is None and status.get("phase") not in (Phase.STARTING, Phase.READY)
        if tracked.children != {"secret", "pod", "service"} and (may_create_pod or pod is not None):
            try:
                manifest = builders.build_pod(
                    ref,
                    app_name,
                    app,
                    spec,
                    termination_grace=self.settings.termination_grace,
                    idle_grace=self.settings.idle_grace,
                )
            except builders.SpecError as exc:
                await self._finish(key, body, Verdict(Phase.FAILED, "InvalidSpec", str(exc)))
                return self.settings.retention
            created = await self._ensure_children(key, ref, app_name, tracked, manifest)
            if created and pod is None:
                # The status waits for the pod's watch event (moments away; the requeue is a
                # safety net): in a burst, creating the next Session's pod comes first, and the
                # first status write then says where the pod stands, not just "creating".
                return CREATED_LOOK_AGAIN
        verdict = judge(pod, status.get("phase"))
        if finished(verdict.phase):
            await self._finish(key, body, verdict, pod=pod)
            return self.settings.retention
        pod_age = None if tracked.pod_created_at is None else time.monotonic() - tracked.pod_created_at
        settle = creating_settle(verdict, status, pod_age)
        if settle > 0:
            return settle  # the pod's scheduling event will most likely come first
        await self._write_status(key, body, verdict, pod, extra_status)
        body = self.sessions.get(key, body)  # with the status just written
        looks = [self._lifetime_left(spec, body)]
        if looks[0] is not None and looks[0] <= 0:
            await self._finish(
                key,
                body,
                Verdict(
                    Phase.EXPIRED,
                    "MaxLifetime",
                    f"the session reached its maxLifetime of {spec.maxLifetime}s",
                ),
            )
            return self.settings.retention
        if verdict.phase == Phase.READY and pod is not None:
            looks.append(await self._check_idle(key, body, pod, timeout, tracked))
        pending = [t for t in looks if t is not None]
        return min(pending) if pending else None

    async def _read(self, kind: str, namespace: str, name: str) -> JSON | None:
        """A direct read for the rare paths where the watch caches may lag; None if absent."""
        try:
            if kind == "apps":
                found: JSON = await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "apps", name
                )
                self.app_seen(found, deleted=False)
            else:
                pod = await self.core.read_namespaced_pod(name, namespace)
                found = self.api.sanitize_for_serialization(pod)
                if newer(found, self.pods.get((namespace, name))):
                    self.pods[(namespace, name)] = found
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def _lifetime_left(self, spec: SessionSpec, body: JSON) -> float | None:
        if spec.maxLifetime is None:
            return None
        created = parse_rfc3339(body["metadata"].get("creationTimestamp"))
        if created is None:
            return None
        age = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
        return spec.maxLifetime - age

    async def _ensure_children(
        self, key: Key, ref: builders.SessionRef, app_name: str | None, tracked: Tracked, pod: JSON
    ) -> bool:
        """Create-if-absent, the Secret (with the Service) before the pod; AlreadyExists counts
        as done. True when this call created the pod.

        Not all three at once: a pod that reaches its node before its token Secret exists waits
        for the kubelet's retry (CreateContainerConfigError), seconds rather than one round trip.
        """
        first: dict[str, Awaitable[bool]] = {}
        if "secret" not in tracked.children:
            tracked.token = tracked.token or builders.new_token()
            first["secret"] = self._create(
                "secrets", key[0], builders.build_secret(ref, app_name, tracked.token)
            )
        if "service" not in tracked.children:
            first["service"] = self._create("services", key[0], builders.build_service(ref, app_name))
        existed = dict(zip(first, await asyncio.gather(*first.values()), strict=True))
        if existed.get("secret"):
            tracked.token = None  # someone else's token stands; read it when needed
        tracked.children.update({"secret", "service"})
        if "pod" in tracked.children:
            return False
        created = not await self._create("pods", key[0], pod)
        if created:
            tracked.pod_created_at = time.monotonic()
        tracked.children.add("pod")
        return created

    async def _create(self, kind: str, namespace: str, body: JSON) -> bool:
        """Create; True when it existed already."""
        creators: dict[str, Callable[..., Awaitable[Any]]] = {
            "secrets": self.core.create_namespaced_secret,
            "pods": self.core.create_namespaced_pod,
            "services": self.core.create_namespaced_service,
        }
        create = creators[kind]
        self.writes[f"create {kind}"] += 1
        # The created object is not needed: the raw reply skips turning it into model objects,
        # which costs more CPU than the request itself in a burst.
        options: dict[str, Any] = {"_preload_content": False}
        reply = await create(namespace, body, **options)
        try:
            if reply.status == 409:
                return True
            if not 200 <= reply.status < 300:
                raise ApiException(status=reply.status, reason=(await reply.text())[:1000])
        finally:
            reply.release()
        return False

    async def _write_status(
        self, key: Key, body: JSON, verdict: Verdict, pod: JSON | None, extra: JSON | None = None
    ) -> JSON:
        current = body.get("status") or {}
        desired = desired_status(
            current,
            verdict,
            pod=pod,
            generation=body["metadata"].get("generation", 1),
            now=rfc3339(),
            extra=extra,
        )
        patch = status_patch(current, desired)
        if patch:
            result = await self._patch_status(key, {"status": patch})
            self.sessions[key] = result  # our write is the newest view until the watch says more
            if current.get("phase") != desired["phase"] or current.get("reason") != desired["reason"]:
                log.info(
                    "session %s/%s: %s (%s) %s",
                    key[0],
                    key[1],
                    desired["phase"],
                    verdict.reason,
                    verdict.message,
                    extra={"session": key[1], "namespace": key[0]},
                )
                await self._transition_event(body, current.get("phase"), verdict)
                self.accounting.transition(body, current.get("phase"), desired)
        return desired

    async def _patch_status(self, key: Key, body: JSON) -> JSON:
        """A merge patch of the Session's status subresource; returns the updated Session."""
        self.writes["patch sessions/status"] += 1
        options: dict[str, Any] = {"_content_type": MERGE_PATCH}  # not in the client's typed signature
        result: JSON = await self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, key[0], "sessions", key[1], body, **options
        )
        return result

    async def _transition_event(self, body: JSON, before: str | None, verdict: Verdict) -> None:
        """Events for transitions a person cares about only."""
        if verdict.phase == Phase.READY and before != Phase.READY:
            kind = "Normal"
        elif finished(verdict.phase):
            kind = "Warning" if verdict.phase == Phase.FAILED else "Normal"
        elif verdict.reason == "Unschedulable" or verdict.reason == "AppNotFound":
            kind = "Warning"
        else:
            return
        meta = body["metadata"]
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Session",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": verdict.reason if verdict.phase != Phase.READY else "Ready",
            "message": verdict.message[:1024],
            "source": {"component": "kube-sessions-operator"},
            "firstTimestamp": rfc3339(precision="seconds"),
            "lastTimestamp": rfc3339(precision="seconds"),
            "count": 1,
        }
        self.writes["create events"] += 1
        try:
            await self.core.create_namespaced_event(meta["namespace"], cast(Any, event))
        except ApiException as exc:
            log.warning(
                "could not post event for %s: %s", meta["name"], exc.reason, extra={"session": meta["name"]}
            )

    async def _finish(self, key: Key, body: JSON, verdict: Verdict, pod: JSON | None = None) -> None:
        """A finished session: its final status and the deletion of its children in one round
        trip (the status says why; a cull must not wait on a write before it starts)."""
        final = self.accounting.status_fields(key)  # the GPU-seconds as last read from the worker
        await asyncio.gather(self._write_status(key, body, verdict, pod, final), self._delete_children(key))

    async def _delete_children(self, key: Key) -> None:
        namespace, name = key
        for kind, delete, child in (
            ("pods", self.core.delete_namespaced_pod, name),
            ("services", self.core.delete_namespaced_service, name),
            ("secrets", self.core.delete_namespaced_secret, builders.token_secret_name(name)),
        ):
            self.writes[f"delete {kind}"] += 1
            try:
                await delete(child, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        tracked = self.tracked.get(key)
        if tracked:
            tracked.children.clear()

    async def _tombstone(self, key: Key, body: JSON, tracked: Tracked) -> float | None:
        """Finished: children gone, then the Session itself once its retention has passed."""
        pod = self.pods.get(key)
        if tracked.children or (pod is not None and not pod["metadata"].get("deletionTimestamp")):
            await self._delete_children(key)
        ended = parse_rfc3339((body.get("status") or {}).get("endedAt"))
        left = self.settings.retention
        if ended is not None:
            left -= (datetime.datetime.now(datetime.UTC) - ended).total_seconds()
        if left > 0:
            return left
        self.writes["delete sessions"] += 1
        try:
            await self.custom.delete_namespaced_custom_object(GROUP, VERSION, key[0], "sessions", key[1])
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("session %s/%s: tombstone removed", *key, extra={"session": key[1], "namespace": key[0]})
        return None

    # -- idle -----------------------------------------------------------------------------

    async def _token(self, key: Key, tracked: Tracked) -> str:
        if tracked.token is None:
            secret = await self.core.read_namespaced_secret(builders.token_secret_name(key[1]), key[0])
            tracked.token = base64.b64decode(secret.data[builders.TOKEN_KEY]).decode()
        return tracked.token

    async def _worker(
        self, method: str, key: Key, pod: JSON, tracked: Tracked, path: str
    ) -> tuple[int, JSON]:
        """One call to the session's worker with its token; (status, JSON body)."""
        ip = pod.get("status", {}).get("podIP")
        url = f"http://{ip}:{builders.WORKER_PORT}{path}"
        headers = {"Authorization": f"Bearer {await self._token(key, tracked)}"}
        timeout = aiohttp.ClientTimeout(total=self.settings.worker_timeout)
        async with self.http.request(method, url, headers=headers, timeout=timeout) as resp:
            if resp.status >= 500 or resp.status in (401, 403, 404):
                resp.raise_for_status()
            body: JSON = await resp.json(content_type=None) if resp.content_length != 0 else {}
            return resp.status, body

    async def _check_idle(
        self, key: Key, body: JSON, pod: JSON, timeout: int, tracked: Tracked
    ) -> float | None:
        wait = tracked.retry_at - time.monotonic()
        if tracked.unreachable and wait > 0:
            # Backing off an unreachable worker: other events must not spend the tries faster.
            return wait
        try:
            keepalive = self._new_keepalive(body, tracked)
            if keepalive is not None:
                await self._worker("POST", key, pod, tracked, "/keepalive")
                tracked.keepalive = keepalive
                tracked.activity_written_at = 0.0  # record it (and that it was seen) without delay
            _, worker = await self._worker("GET", key, pod, tracked, "/status")
        except (aiohttp.ClientError, TimeoutError, ApiException) as exc:
            return await self._unreachable(key, body, pod, tracked, exc)
        self.accounting.observe(key, body, worker)
        if tracked.unreachable:
            tracked.unreachable = 0
            await self._set_unreachable(key, body, None)
        wall_now = time.time()
        last = parse_rfc3339(worker.get("lastActivity"))
        last_ts = last.timestamp() if last else wall_now
        # Nobody can call a session before it is announced Ready, so its idle clock starts
        # there at the earliest: the expiresAt published with Ready is a promise.
        ready_at = parse_rfc3339((body.get("status") or {}).get("readyAt"))
        if ready_at is not None:
            last_ts = max(last_ts, ready_at.timestamp())
        decision = idle.decide(
            wall_now, last_ts, timeout, bool(worker.get("inFlight") or worker.get("queued"))
        )
        if decision.expire:
            # Decided here, done by the worker in one step: it refuses if a call came in since.
            try:
                code, answer = await self._worker("POST", key, pod, tracked, f"/close?ifIdleFor={timeout}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                return await self._unreachable(key, body, pod, tracked, exc)
            if code == 409:
                return float(answer.get("remainingSeconds") or idle.BUSY_LOOK_MIN) + idle.EPSILON
            await self._finish(
                key, body, Verdict(Phase.EXPIRED, "IdleTimeout", f"no call for {timeout}s (idle timeout)")
            )
            return self.settings.retention
        await self._record_activity(key, body, tracked, last_ts, timeout, worker)
        return decision.look_again_in

    async def _last_reading(self, key: Key, body: JSON, tracked: Tracked) -> None:
        """Read a closing session's worker once more, so its final GPU-seconds count the time
        since the last look. Best effort: a worker that does not answer keeps its last reading."""
        pod = self.pods.get(key)
        if pod is None or (body.get("status") or {}).get("phase") != Phase.READY:
            return
        try:
            _, worker = await self._worker("GET", key, pod, tracked, "/status")
        except (aiohttp.ClientError, TimeoutError, ApiException) as exc:
            log.info(
                "session %s/%s: no final reading of the worker: %s",
                *key,
                exc,
                extra={"session": key[1], "namespace": key[0]},
            )
            return
        self.accounting.observe(key, body, worker)

    def _new_keepalive(self, body: JSON, tracked: Tracked) -> str | None:
        """A ``kubesessions.io/keepalive`` value not yet passed on to the worker, if any."""
        value = (body["metadata"].get("annotations") or {}).get(KEEPALIVE_ANNOTATION)
        if value is None or value == tracked.keepalive:
            return None
        if tracked.keepalive is None:
            # After a restart: the pod remembers which keepalive was already passed on.
            pod = self.pods.get((body["metadata"]["namespace"], body["metadata"]["name"]), {})
            if (pod.get("metadata", {}).get("annotations") or {}).get(KEEPALIVE_SEEN) == value:
                tracked.keepalive = value
                return None
        return str(value)

    async def _record_activity(
        self, key: Key, body: JSON, tracked: Tracked, last_ts: float, timeout: int, worker: JSON
    ) -> None:
        """Annotate the pod and the status with the last activity, throttled per session."""
        last_ms = round(last_ts * 1000)
        last = rfc3339(_from_ms(last_ms))
        status = body.get("status") or {}
        recorded = parse_rfc3339(status.get("lastActivityTime"))
        calls = worker.get("calls") if isinstance(worker.get("calls"), int) else None
        if (
            recorded is not None
            and round(recorded.timestamp() * 1000) == last_ms
            and calls in (status.get("calls"), None if status.get("calls") is not None else 0)
        ):
            return
        if time.monotonic() - tracked.activity_written_at < idle.write_interval(timeout):
            return
        tracked.activity_written_at = time.monotonic()
        expires = rfc3339(_from_ms(last_ms + timeout * 1000))
        pod_annotations = {builders.LAST_ACTIVITY: last}
        if tracked.keepalive is not None:
            pod_annotations[KEEPALIVE_SEEN] = tracked.keepalive
        self.writes["patch pods"] += 1
        try:
            await self.core.patch_namespaced_pod(
                key[1], key[0], {"metadata": {"annotations": pod_annotations}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        patch: JSON = {"lastActivityTime": last, "expiresAt": expires, **self.accounting.status_fields(key)}
        if calls is not None:
            patch["calls"] = calls
        self.sessions[key] = await self._patch_status(key, {"status": patch})

    async def _unreachable(
        self, key: Key, body: JSON, pod: JSON, tracked: Tracked, exc: BaseException
    ) -> float | None:
        tracked.unreachable += 1
        error = f"{type(exc).__name__}: {exc}".strip()
        log.warning(
            "session %s/%s: worker unreachable (%d/%d): %s",
            key[0],
            key[1],
            tracked.unreachable,
            self.settings.unreachable_limit,
            error,
            extra={"session": key[1], "namespace": key[0]},
        )
        if tracked.unreachable >= self.settings.unreachable_limit:
            message = f"the worker did not answer {tracked.unreachable} times in a row: {error}"
            await self._finish(key, body, Verdict(Phase.FAILED, "WorkerLost", message), pod=pod)
            return self.settings.retention
        await self._set_unreachable(key, body, error)
        backoff = idle.unreachable_backoff(tracked.unreachable)
        tracked.retry_at = time.monotonic() + backoff
        return backoff

    async def _set_unreachable(self, key: Key, body: JSON, error: str | None) -> None:
        """Condition WorkerUnreachable: True with the error, or False once it answers again."""
        status = body.get("status") or {}
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "WorkerUnreachable"]
        conditions.append(
            {
                "type": "WorkerUnreachable",
                "status": "True" if error else "False",
                "reason": "StatusCallFailed" if error else "WorkerAnswers",
                "message": error or "",
                "lastTransitionTime": rfc3339(),
                "observedGeneration": body["metadata"].get("generation", 1),
            }
        )
        self.sessions[key] = await self._patch_status(key, {"status": {"conditions": conditions}})

    # -- orphans --------------------------------------------------------------------------

    async def sweep_orphans(self) -> int:
        """Delete pods and Services labelled as ours whose Session no longer exists."""
        selector = f"{builders.MANAGED_BY}={builders.MANAGER}"
        removed = 0
        for kind, lister, deleter in (
            ("pods", self.core.list_pod_for_all_namespaces, self.core.delete_namespaced_pod),
            ("services", self.core.list_service_for_all_namespaces, self.core.delete_namespaced_service),
            ("secrets", self.core.list_secret_for_all_namespaces, self.core.delete_namespaced_secret),
        ):
            if self.settings.namespaces:
                items = []
                for ns in self.settings.namespaces:
                    namespaced = getattr(self.core, f"list_namespaced_{kind[:-1]}")
                    items += (await namespaced(ns, label_selector=selector)).items
            else:
                items = (await lister(label_selector=selector)).items
            for item in items:
                meta = item.metadata
                session = (meta.labels or {}).get(builders.SESSION_LABEL)
                if not session or await self._session_exists(meta.namespace, session):
                    continue
                self.writes[f"delete {kind}"] += 1
                try:
                    await deleter(meta.name, meta.namespace)
                    removed += 1
                    log.info("deleted orphan %s %s/%s", kind[:-1], meta.namespace, meta.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        return removed

    async def _session_exists(self, namespace: str, name: str) -> bool:
        if (namespace, name) in self.sessions:
            return True
        try:
            await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "sessions", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
