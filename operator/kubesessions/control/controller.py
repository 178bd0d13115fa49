"""The Session controller: level-based reconcile of each Session from what the watches saw.

Handlers (see :mod:`kubesessions.control.handlers`) only record the latest objects and enqueue the
Session's key; :meth:`Controller.reconcile` then decides what the Session needs, one key at a
time, and says when to look again (idle deadline, max lifetime, tombstone retention). The
deciding is in :mod:`kubesessions.control.decide`, the doing in :mod:`kubesessions.control.act`:
``act.children`` creates and deletes the pod, Service and Secret, ``act.worker`` talks to the
worker, ``act.status`` writes the status and Events, ``act.pool`` keeps the warm pools. The
caches (Sessions, pods, Apps, what is tracked of each Session) are the controller's alone: the
parts return what they wrote, and the controller keeps it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api import names
from kubesessions.api.models import (
    DEFAULT_KEEP,
    AppSpec,
    AppSuspend,
    Phase,
    SessionSpec,
    SessionStatus,
    StartedFrom,
    Suspension,
    effective_suspend,
    effective_timeout,
)
from kubesessions.api.names import API_VERSION, CLOSE_ANNOTATION, JSON, RESUME_REQUESTED, SUSPEND_REQUESTED
from kubesessions.common.timefmt import parse_rfc3339
from kubesessions.control import accounting
from kubesessions.control.act.children import ALL_CHILDREN, Children, NameConflict
from kubesessions.control.act.pool import Pooling
from kubesessions.control.act.status import StatusWriter
from kubesessions.control.act.worker import Look, WorkerLink
from kubesessions.control.decide import children, idle, pool, suspend
from kubesessions.control.decide.status import (
    Verdict,
    creating_settle,
    current_status,
    exit_message,
    finished,
    judge,
    setup_overdue,
)
from kubesessions.control.settings import OperatorSettings
from kubesessions.control.state import Key, Tracked
from kubesessions.kube.kubeapi import Kube, core_path, group_path
from kubesessions.kube.objects import cacheable, cacheable_pod, newer
from kubesessions.kube.workqueue import WorkQueue
from kubesessions.statestore import StoreError, open_store

__all__ = ["Controller", "OperatorSettings"]
log = logging.getLogger("kubesessions.operator")

# Seconds until a look at a Session whose pod was just created, should its watch event not come.
CREATED_LOOK_AGAIN = 2.0
# Seconds until a look at a Session whose children's names are held by objects being deleted.
NAME_IN_USE_LOOK_AGAIN = 1.0


def _own(pod: JSON | None, session_uid: str) -> JSON | None:
    """``pod`` if the Session with this uid owns it (made it, or claimed it from a pool)."""
    return pod if children.owned_by(pod, session_uid) else None


def _ref(body: JSON) -> children.SessionRef:
    meta = body["metadata"]
    return children.SessionRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


class Controller:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.settings = settings
        self.kube = kube = Kube(api)
        self.sessions: dict[Key, JSON] = {}
        self.pods: dict[Key, JSON] = {}
        self.apps: dict[Key, JSON] = {}
        self.tracked: dict[Key, Tracked] = {}
        self.children = Children(kube, settings)
        self.accounting = accounting.Accounting()
        self.status = StatusWriter(kube, self.accounting)
        self.link = WorkerLink(kube, settings, self.accounting)
        self.store = open_store(settings.state_store) if settings.state_store is not None else None
        self.pool = Pooling(kube, settings, self.apps, self.children, self._app_written, self.link)
        self.link.on_suspendable = self.pool.queue.add  # its App's condition says what was seen
        # Pool workers claimed before this replica began to act (by an earlier run or leader),
        # by Session: read once then, so no Session claims a second one.
        self.claimed_before: dict[Key, JSON] = {}
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=settings.workers)
        self._tasks: set[asyncio.Task[None]] = set()  # deletions of deleted Sessions' states

    async def act(self) -> None:
        """Do the work from now on, until cancelled: the Sessions' queue, the pools' queue and
        the orphan sweep. Claims made before now were another replica's (or an earlier run's)."""
        self.claimed_before = await self._claims_so_far()
        work = [
            asyncio.create_task(self.queue.run(), name="workqueue"),
            asyncio.create_task(self.pool.queue.run(), name="warm-pools"),
            asyncio.create_task(self._sweep_forever(), name="orphan-sweep"),
        ]
        try:
            await asyncio.gather(*work)
        finally:
            for task in work:
                task.cancel()
            await asyncio.gather(*work, return_exceptions=True)

    async def _claims_so_far(self) -> dict[Key, JSON]:
        """The pool workers claimed so far, read until the API answers: the pod watch may not
        show them yet, and a Session that claimed one must never claim a second."""
        pause = 0.2
        while True:
            try:
                return await self.pool.claimed_workers(self.settings.namespaces)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("reading the claimed pool workers failed (again in %.1fs): %s", pause, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.sweep_orphans()
                if removed:
                    log.info("orphan sweep removed %d objects", removed)
            except Exception:
                log.exception("orphan sweep failed; trying again later")
            await asyncio.sleep(self.settings.orphan_sweep_interval)

    async def close(self) -> None:
        await self.link.close()
        await self.kube.close()

    # -- fed by the watches ---------------------------------------------------------------

    def session_seen(self, body: JSON, deleted: bool) -> None:
        body = cacheable(body)
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.sessions.pop(key, None)
            self.tracked.pop(key, None)
            if (body.get("status") or {}).get("suspension"):
                # Deleted while suspended: its state goes now (the sweep catches a miss).
                self._background(self._delete_state(key, current_status(body).suspension))
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
        body = cacheable_pod(body)
        self.pool.pod_seen(body, deleted)
        if deleted:
            self.accounting.forget_pod(body["metadata"]["namespace"], body["metadata"]["name"])
        session = (body.get("metadata", {}).get("labels") or {}).get(names.SESSION_LABEL)
        if not session:
            return
        key = (body["metadata"]["namespace"], session)
        if deleted:
            if self.pods.get(key, {}).get("metadata", {}).get("uid") == body["metadata"]["uid"]:
                self.pods.pop(key, None)
            if key in self.tracked:
                self.tracked[key].children.pop("pod", None)
        elif newer(body, self.pods.get(key)):
            self.pods[key] = body
        self.queue.add(key)

    def app_seen(self, body: JSON, deleted: bool) -> None:
        body = cacheable(body)
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        cached = self.apps.get(key)
        if deleted:
            self.apps.pop(key, None)
        elif newer(body, cached):
            self.apps[key] = body
        self.pool.app_seen(body, deleted)
        if (
            not deleted
            and cached is not None
            and cached["metadata"].get("generation") == meta.get("generation")
        ):
            return  # its status only (the warm pool's counts): nothing a Session reads
        for skey, session in self.sessions.items():
            if skey[0] == key[0] and session.get("spec", {}).get("app") == key[1]:
                self.queue.add(skey)

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        body = self.sessions.get(key)
        if body is None:
            return None
        tracked = self.tracked.setdefault(key, Tracked(uid=body["metadata"]["uid"]))
        status = current_status(body)
        if finished(status.phase):
            return await self._tombstone(key, body, tracked)
        annotations = body["metadata"].get("annotations") or {}
        if CLOSE_ANNOTATION in annotations:
            reason = annotations[CLOSE_ANNOTATION] or "closed on request"
            pod = self.pods.get(key)
            if pod is not None and status.phase == Phase.READY:
                await self.link.last_reading(key, body, pod, tracked)
            return await self._finish(key, body, Verdict(Phase.CLOSED, "ClosedByUser", reason))
        spec = SessionSpec.model_validate(body.get("spec") or {})
        ref = _ref(body)
        if status.phase == Phase.SUSPENDED:
            woken = await self._suspended(key, body, spec, status)
            if not isinstance(woken, dict):
                return woken
            body, status = woken, current_status(woken)
        running = status.phase in (Phase.STARTING, Phase.READY, Phase.SUSPENDING)
        # Only its own pod is the Session's worker: one of its name or label may be anyone's (an
        # earlier Session's of the same name, still terminating).
        pod = _own(self.pods.get(key), ref.uid)
        if pod is not None and (
            pod["metadata"]["uid"] == tracked.suspended_from
            or (status.phase == Phase.RESUMING and pod["metadata"].get("deletionTimestamp"))
        ):
            pod = None  # the worker it suspended from, on its way out: a resume needs another
        if pod is None and running:
            # Before calling the worker lost, ask the API: after a restart the pod watch may
            # not have caught up with the Session watch yet.
            pod = _own(await self._read("pods", key[0], status.podName or key[1]), ref.uid)
        if pod is not None:
            tracked.children["pod"] = pod["metadata"]["uid"]
        # The App is needed to start the worker only: once started, the session keeps what it
        # recorded then (timeout, GPUs), whatever becomes of its App.
        recorded = status.sessionTimeout if pod is not None or running else None
        app: AppSpec | None = None
        if spec.app is not None and recorded is None:
            app_body = self.apps.get((key[0], spec.app)) or await self._read("apps", key[0], spec.app)
            if app_body is None and pod is None and not running:
                message = f'App "{spec.app}" not found in {key[0]}'
                # A resuming session stays Resuming (its state is still to be handed back).
                waiting = Phase.RESUMING if status.phase == Phase.RESUMING else Phase.PENDING
                verdict = Verdict(waiting, "AppNotFound", message)
                self._written(key, await self.status.write(key, body, verdict, None))
                return None  # an App event wakes it
            app = AppSpec.model_validate(app_body.get("spec") or {}) if app_body else None
        timeout = recorded if recorded is not None else effective_timeout(spec, app)
        # All known from the start, so the first status write carries them (not one write each).
        facts = SessionStatus(
            sessionTimeout=timeout,
            gpus=status.gpus if recorded is not None else children.gpu_summary(app, spec),
            endpoint=children.endpoint(ref),
            podName=ref.name,
        )
        claim_started = time.monotonic()
        # Claimed before this replica acted? Taken on the first look either way (kept, the entry
        # would outlive a running Session).
        claimed_before = _own(self.claimed_before.pop(key, None), ref.uid)
        if pod is None and not running and not tracked.children and claimed_before is not None:
            pod = self.pods[key] = claimed_before
        # A worker that has been running is never replaced: its state is gone with it.
        if tracked.children.keys() != ALL_CHILDREN and (pod is not None or not running):
            try:
                created, pod = await self._start(key, ref, spec, app, tracked, pod)
            except children.SpecError as exc:
                return await self._finish(key, body, Verdict(Phase.FAILED, "InvalidSpec", str(exc)))
            except NameConflict as exc:
                return await self._name_conflict(key, body, exc)
            if created:
                # The status waits for the pod's watch event (moments away; the requeue is a
                # safety net): in a burst, creating the next Session's pod comes first, and the
                # first status write then says where the pod stands, not just "creating".
                return CREATED_LOOK_AGAIN
        verdict = judge(pod, status.phase)
        overdue, setup_left = setup_overdue(pod, verdict, datetime.datetime.now(datetime.UTC))
        verdict = overdue or verdict
        saved = suspend.suspended_from_exit(exit_message(pod))
        if saved is not None and status.phase == Phase.SUSPENDING:
            # Suspended, but its answer was lost (this operator restarted mid-suspend): the
            # worker's exit kept it.
            return await self._park(key, body, spec, pod, saved, "IdleTimeout")
        if finished(verdict.phase):
            return await self._finish(key, body, verdict, pod=pod)
        if (
            status.phase == Phase.SUSPENDING
            and verdict.ready
            and pod is not None
            and not tracked.suspend_answered
        ):
            # Suspending, its worker up, and no answer of this operator's (it restarted
            # mid-suspend): not Ready yet, ask again; the worker says if that suspend still runs.
            by_hand = status.reason != "IdleTimeout"
            return await self._suspend(key, body, spec, pod, tracked, timeout, by_hand=by_hand, again=True)
        pod_age = None if tracked.pod_created_at is None else time.monotonic() - tracked.pod_created_at
        settle = creating_settle(verdict, status.phase, pod_age)
        if settle > 0:
            return settle  # the pod's scheduling event will most likely come first
        # A resuming session's worker is known once it has one (a claim's hand-over comes then).
        if status.startedFrom is None and (pod is not None or status.phase != Phase.RESUMING):
            claimed_at = pool.claimed_at(pod, ref.uid)
            if claimed_at is not None and verdict.ready and pod is not None and spec.app is not None:
                app_key = (key[0], spec.app)
                token = await self.link.token(key, tracked)
                bearers = [await self.pool.token(app_key), token]
                await self.link.hand_over(ref, pod, bearers, token, timeout)
                log.info(
                    "session %s/%s: handed over worker %s",
                    *key,
                    pod["metadata"]["name"],
                    extra={"session": key[1], "namespace": key[0]},
                )
                self.pool.handed_over(app_key, claim_started)
            started = StartedFrom.POOL if claimed_at else StartedFrom.COLD
            facts = facts.model_copy(update={"startedFrom": started, "claimedAt": claimed_at})
        resumed = None
        if status.phase == Phase.RESUMING:
            if not verdict.ready or pod is None:
                verdict = suspend.resuming(verdict)
            else:
                if (failed := await self._resume(key, body, pod, tracked, status.suspension)) is not None:
                    return await self._finish(key, body, failed, pod=pod)
                resumed, facts = status.suspension, facts.model_copy(update={"suspension": None})
        if verdict.phase == Phase.READY:
            # Acted on (or a stale one), and gone before the status says Ready: a reader that
            # sees Ready sees the request done.
            body = await self._unannotate(key, body, RESUME_REQUESTED)
        body = self._written(key, await self.status.write(key, body, verdict, pod, facts)) or body
        if resumed is not None:
            await self._delete_state(key, resumed)
        lifetime_left = self._lifetime_left(spec, body)
        if lifetime_left is not None and lifetime_left <= 0:
            message = f"the session reached its maxLifetime of {spec.maxLifetime}s"
            return await self._finish(key, body, Verdict(Phase.EXPIRED, "MaxLifetime", message))
        looks = [lifetime_left, setup_left]
        if verdict.phase == Phase.READY and pod is not None:
            settings = self._suspend_settings(key, spec)
            no_suspend = suspend.unavailable(settings, self.store is not None, None)
            look = await self.link.look(key, body, pod, timeout, tracked, no_suspend)
            body = await self._record(key, body, pod, look)
            if look.suspend or (SUSPEND_REQUESTED in annotations and look.idle and look.end is None):
                # By hand only while no call runs: the worker would refuse (BUSY) anyway.
                return await self._suspend(key, body, spec, pod, tracked, timeout, by_hand=not look.suspend)
            if look.end is not None:
                return await self._finish(key, body, look.end, pod=pod)
            looks.append(look.again_in)
        pending = [t for t in looks if t is not None]
        return min(pending) if pending else None

    async def _start(
        self,
        key: Key,
        ref: children.SessionRef,
        spec: SessionSpec,
        app: AppSpec | None,
        tracked: Tracked,
        pod: JSON | None,
    ) -> tuple[bool, JSON | None]:
        """The Session's children, create-if-absent, its worker claimed from its App's warm pool
        when there is one: (the pod created now, the pod if it exists or was claimed)."""
        manifest = None
        if pod is None:
            manifest = children.build_pod(
                ref,
                spec.app,
                app,
                spec,
                termination_grace=self.settings.termination_grace,
                idle_grace=self.settings.idle_grace,
            )
            if spec.app is not None and app is not None and app.warmPool and app.warmPool.size:
                # The Secret and Service are the Session's either way; the claim races them.
                access, claimed = await asyncio.gather(
                    self.children.ensure_access(key, ref, spec.app, tracked),
                    self.pool.claim(ref, spec.app, app, spec),
                    return_exceptions=True,
                )
                # A worker claimed is the Session's even if the access write failed: the
                # retry must find it, not claim a second one or start cold.
                if isinstance(claimed, dict):
                    pod, self.pods[key], manifest = claimed, claimed, None
                for outcome in (access, claimed):
                    if isinstance(outcome, BaseException):
                        raise outcome
        return await self.children.ensure(key, ref, spec.app, tracked, manifest), pod

    async def _name_conflict(self, key: Key, body: JSON, conflict: NameConflict) -> float:
        """Names its children need are held by objects not the Session's: it fails saying which,
        and they are left alone. Objects on their way out (an earlier Session's of the same name)
        are waited for instead."""
        extra = {"session": key[1], "namespace": key[0]}
        if conflict.passing:
            log.info("session %s/%s waits: %s", *key, conflict, extra=extra)
            verdict = Verdict(Phase.PENDING, "NameInUse", f"waiting for them to go: {conflict}")
            self._written(key, await self.status.write(key, body, verdict, None))
            return NAME_IN_USE_LOOK_AGAIN
        log.warning("session %s/%s failed: %s", *key, conflict, extra=extra)
        message = f"{conflict}; left alone: give the Session another name"
        return await self._finish(key, body, Verdict(Phase.FAILED, "NameConflict", message))

    def _pod_name(self, key: Key, body: JSON) -> str:
        """The worker pod's name: the Session's, unless it claimed a pool worker."""
        pod = self.pods.get(key)
        return str(pod["metadata"]["name"]) if pod else current_status(body).podName or key[1]

    async def _read(self, kind: str, namespace: str, name: str) -> JSON | None:
        """A direct read for the rare paths where the watch caches may lag; None if absent."""
        try:
            if kind == "apps":
                found = await self.kube.get(group_path(API_VERSION, namespace, "apps", name))
                self.app_seen(found, deleted=False)
            else:
                found = cacheable_pod(await self.kube.get(core_path(namespace, "pods", name)))
                # Cached under its Session, as the watch does (a pool worker's name differs).
                session = (found["metadata"].get("labels") or {}).get(names.SESSION_LABEL, name)
                if newer(found, self.pods.get((namespace, session))):
                    self.pods[(namespace, session)] = found
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

    async def _finish(self, key: Key, body: JSON, verdict: Verdict, pod: JSON | None = None) -> float:
        """A finished session: its final status and the deletion of its children in one round
        trip (the status says why; a cull must not wait on a write before it starts). Returns
        when to look again: at the end of its retention as a tombstone."""
        # The GPU-seconds as last read from the worker ride along with the final status.
        final = self.accounting.status_fields(key)
        facts = SessionStatus.model_validate(final) if final else None
        saved = current_status(body).suspension
        if saved is not None and verdict.reason != "ResumeFailed":
            # Its state ends with it; after a failed resume it is kept (for a look at what
            # failed) until the tombstone goes.
            await self._delete_state(key, saved)
        written, _ = await asyncio.gather(
            self.status.write(key, body, verdict, pod, facts),
            self.children.delete(
                key, body["metadata"]["uid"], self.tracked.get(key), self._pod_name(key, body)
            ),
        )
        self._written(key, written)
        return self.settings.retention

    def _written(self, key: Key, body: JSON | None) -> JSON | None:
        """A Session as the status writer wrote it (None: nothing written) goes into the cache,
        unless the watch brought a newer one meanwhile."""
        if body is not None and key in self.tracked and newer(body, self.sessions.get(key)):
            self.sessions[key] = body
        return body

    def _app_written(self, body: JSON) -> None:
        """An App as the pools' upkeep wrote its status."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.apps and newer(body := cacheable(body), self.apps[key]):
            self.apps[key] = body

    async def _record(self, key: Key, body: JSON, pod: JSON, look: Look) -> JSON:
        """What a look at the worker found that must be written: its reachability (a
        condition), its activity (the pod's idle annotation, the status)."""
        if look.unreachable is not None or look.answers_again:
            body = self._written(key, await self.status.set_unreachable(key, body, look.unreachable)) or body
        if look.activity is not None:
            # The pod's own name: a claimed pool worker's is not the Session's.
            await self.children.annotate_pod(key[0], pod["metadata"]["name"], look.activity.pod_annotations)
            body = self._written(key, await self.status.patch(key, look.activity.status)) or body
        return body

    async def _tombstone(self, key: Key, body: JSON, tracked: Tracked) -> float | None:
        """Finished: children gone, then the Session itself once its retention has passed."""
        pod = _own(self.pods.get(key), tracked.uid)
        if tracked.children or (pod is not None and not pod["metadata"].get("deletionTimestamp")):
            await self.children.delete(key, tracked.uid, tracked, self._pod_name(key, body))
        ended = parse_rfc3339(current_status(body).endedAt)
        left = self.settings.retention
        if ended is not None:
            left -= (datetime.datetime.now(datetime.UTC) - ended).total_seconds()
        if left > 0:
            return left
        await self._delete_state(key, current_status(body).suspension)
        try:
            await self.kube.delete(group_path(API_VERSION, key[0], "sessions", key[1]))
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("session %s/%s: tombstone removed", *key, extra={"session": key[1], "namespace": key[0]})
        return None

    async def sweep_orphans(self) -> int:
        removed = await self.children.sweep_orphans(self._session_exists)
        return removed + await self._sweep_states()

    async def _sweep_states(self) -> int:
        """Delete saved states whose Session (that uid) no longer exists."""
        if self.store is None:
            return 0
        removed = 0
        prefixes = [f"{names.STATE_PREFIX}{ns}/" for ns in self.settings.namespaces] or [names.STATE_PREFIX]
        for prefix in prefixes:
            for object_key in await self.store.keys(prefix):
                parts = object_key[len(names.STATE_PREFIX) :].split("/")
                if len(parts) != 4 or await self._session_uid(parts[0], parts[1]) == parts[2]:
                    continue
                await self.store.delete(object_key)
                removed += 1
                log.info("deleted orphan state %s", object_key)
        return removed

    async def _session_uid(self, namespace: str, name: str) -> str | None:
        cached = self.sessions.get((namespace, name))
        if cached is not None:
            return str(cached["metadata"]["uid"])
        try:
            found = await self.kube.get(group_path(API_VERSION, namespace, "sessions", name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(found["metadata"]["uid"])

    # -- suspend and resume ---------------------------------------------------------------

    def _suspend_settings(self, key: Key, spec: SessionSpec) -> AppSuspend | None:
        """The suspend settings in force: the App's as the Session overrides them (None: off)."""
        app_body = self.apps.get((key[0], spec.app)) if spec.app is not None else None
        app = AppSpec.model_validate(app_body.get("spec") or {}) if app_body is not None else None
        return effective_suspend(spec, app)

    async def _suspend(
        self,
        key: Key,
        body: JSON,
        spec: SessionSpec,
        pod: JSON,
        tracked: Tracked,
        timeout: int,
        *,
        by_hand: bool,
        again: bool = False,
    ) -> float | None:
        """Have the worker save its app's state and stop. A call that came first wins (look
        again soon); a failure ends an idle session as an idle expiry would, and leaves one
        suspended by hand running."""
        extra = {"session": key[1], "namespace": key[0]}
        settings = self._suspend_settings(key, spec)
        why_not = suspend.unavailable(settings, self.store is not None, None)
        if why_not is not None or settings is None or self.store is None:
            log.warning("session %s/%s: not suspended: %s", *key, why_not, extra=extra)
            await self.status.event(body, "Warning", "SuspendRefused", f"not suspended: {why_not}")
            await self._unannotate(key, body, SUSPEND_REQUESTED)
            return idle.BUSY_LOOK_MAX
        reason = "SuspendRequested" if by_hand else "IdleTimeout"
        verdict = Verdict(Phase.SUSPENDING, reason, "the app saves its state; the worker then stops")
        body = self._written(key, await self.status.write(key, body, verdict, pod)) or body
        await self.link.last_reading(key, body, pod, tracked)  # its GPU-seconds up to now
        state_key = names.state_key(*key, body["metadata"]["uid"])
        started = time.monotonic()
        tracked.suspend_answered = False
        try:
            code, answer = await self.link.suspend(
                key, pod, tracked, self.store.presign_put(state_key), settings.maxStateBytes
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            code, answer = 0, {"code": "WORKER_UNREACHABLE", "detail": f"{type(exc).__name__}: {exc}"}
        outcome = suspend.suspend_outcome(code, answer, again=again)
        self.accounting.suspended(outcome, time.monotonic() - started)
        tracked.suspend_answered = not outcome.underway
        if outcome.underway:
            log.info(
                "session %s/%s: a suspend asked for before is under way (or just done): its exit records it",
                *key,
                extra=extra,
            )
            return outcome.again_in
        if outcome.again_in is not None:
            return outcome.again_in  # the next look writes Ready back
        if outcome.saved is None:
            log.warning("session %s/%s: suspend failed: %s", *key, outcome.failed, extra=extra)
            if by_hand:
                await self.status.event(body, "Warning", "SuspendFailed", str(outcome.failed))
                await self._unannotate(key, body, SUSPEND_REQUESTED)
                return suspend.BUSY_RETRY  # the next look writes Ready back
            return await self._finish(key, body, suspend.idle_end(str(outcome.failed), timeout), pod=pod)
        return await self._park(key, body, spec, pod, outcome.saved, reason)

    async def _park(
        self, key: Key, body: JSON, spec: SessionSpec, pod: JSON | None, answer: JSON, reason: str
    ) -> float:
        """The state is saved: status Suspended (with it), the worker pod deleted (its GPU free).
        Looks again at the keep time's end."""
        settings = self._suspend_settings(key, spec)
        keep = settings.keepSeconds if settings is not None else DEFAULT_KEEP
        now = datetime.datetime.now(datetime.UTC)
        saved = suspend.suspension(answer, names.state_key(*key, body["metadata"]["uid"]), now, keep)
        facts = suspend.suspended_fields(saved)
        final = self.accounting.status_fields(key)
        if final:
            facts.gpuSeconds = SessionStatus.model_validate(final).gpuSeconds
        message = f"{saved.bytes} bytes of state saved in {saved.seconds:g}s; kept until {saved.expiresAt}"
        verdict = Verdict(Phase.SUSPENDED, reason, message)
        # The request is done before the status says so (a restart in between finds the pod's
        # exit and records the suspend from it).
        body = await self._unannotate(key, body, SUSPEND_REQUESTED)
        body = self._written(key, await self.status.write(key, body, verdict, None, facts)) or body
        tracked = self.tracked.get(key)
        if pod is not None:
            await self.children.delete_owned(
                key[0], "pods", pod["metadata"]["name"], body["metadata"]["uid"], pod["metadata"]["uid"]
            )
        if tracked is not None:
            tracked.children.pop("pod", None)
            tracked.suspended_from = pod["metadata"]["uid"] if pod is not None else None
            tracked.unreachable, tracked.keepalive = 0, None
        return float(keep)

    async def _suspended(
        self, key: Key, body: JSON, spec: SessionSpec, status: SessionStatus
    ) -> JSON | float | None:
        """A Suspended session: expire it, move its expiry (a keepalive), or wake it (returns
        the Session, now Resuming, for the reconcile to start its worker)."""
        saved = status.suspension or Suspension()
        settings = self._suspend_settings(key, spec)
        keep = settings.keepSeconds if settings is not None else DEFAULT_KEEP
        annotations = body["metadata"].get("annotations") or {}
        now = datetime.datetime.now(datetime.UTC)
        step = suspend.suspended_step(now, saved, annotations, keep)
        if step.next == suspend.Next.EXTEND:
            moved = saved.model_copy(update={"expiresAt": step.expires_at})
            fields = {"suspension": moved.model_dump(exclude_none=True), "expiresAt": step.expires_at}
            self._written(key, await self.status.patch(key, fields))
            return float(keep)
        if step.next == suspend.Next.EXPIRE:
            return await self._finish(key, body, suspend.expired(saved, keep))
        if SUSPEND_REQUESTED in annotations:
            body = await self._unannotate(key, body, SUSPEND_REQUESTED)  # suspended already
        if step.next == suspend.Next.WAIT:
            return step.again_in
        self.accounting.not_spent(key, body, saved, now)
        verdict = Verdict(Phase.RESUMING, "Resuming", suspend.RESUMING)
        return self._written(key, await self.status.write(key, body, verdict, None)) or body

    async def _resume(
        self, key: Key, body: JSON, pod: JSON, tracked: Tracked, saved: Suspension | None
    ) -> Verdict | None:
        """Hand the worker its session's saved state (a presigned GET); None: resumed, else the
        Failed verdict."""
        if saved is None or saved.key is None or saved.sha256 is None or saved.bytes is None:
            return Verdict(Phase.FAILED, "ResumeFailed", "no saved state is recorded in status.suspension")
        if self.store is None:
            return Verdict(Phase.FAILED, "ResumeFailed", suspend.NO_STORE)
        log.info(
            "session %s/%s: resuming %d bytes of state on worker %s",
            *key,
            saved.bytes,
            pod["metadata"]["name"],
            extra={"session": key[1], "namespace": key[0]},
        )
        started = time.monotonic()
        try:
            code, answer = await self.link.resume(
                key, pod, tracked, self.store.presign_get(saved.key), saved.sha256, saved.bytes
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            code, answer = 0, {"code": "WORKER_UNREACHABLE", "detail": f"{type(exc).__name__}: {exc}"}
        failed = suspend.resume_outcome(code, answer)
        self.accounting.resumed(failed is None, time.monotonic() - started)
        return failed

    async def _delete_state(self, key: Key, saved: Suspension | None) -> None:
        """Best effort: a state the store keeps now is the orphan sweep's."""
        if self.store is None or saved is None or saved.key is None:
            return
        try:
            await self.store.delete(saved.key)
        except StoreError as exc:
            log.warning(
                "session %s/%s: its state %s stays for the sweep: %s",
                *key,
                saved.key,
                exc,
                extra={"session": key[1], "namespace": key[0]},
            )

    async def _unannotate(self, key: Key, body: JSON, annotation: str) -> JSON:
        """Remove a request annotation acted on (none there: no write)."""
        if annotation not in (body["metadata"].get("annotations") or {}):
            return body
        path = group_path(API_VERSION, key[0], "sessions", key[1])
        try:
            written = cacheable(
                await self.kube.merge_patch(path, {"metadata": {"annotations": {annotation: None}}})
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return body
        return self._written(key, written) or body

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session_exists(self, namespace: str, name: str) -> bool:
        if (namespace, name) in self.sessions:
            return True
        try:
            await self.kube.get(group_path(API_VERSION, namespace, "sessions", name))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
