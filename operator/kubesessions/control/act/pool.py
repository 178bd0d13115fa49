"""Keeping each App's warm pool and handing its workers to new Sessions.

The pool of an App is reconciled by level like a Session: the pool workers the pod watch
shows, against ``spec.warmPool``; see :mod:`kubesessions.control.decide.pool` for the
decisions. Each ready unclaimed worker is looked at (through the WorkerLink) every
:func:`pool.look_interval`: that keeps it (a pool worker nobody looks at exits by itself) and
counts its pool GPU-seconds. A claim is one
conditional write (the pod's resourceVersion): whichever operator, replica or restart, only
one claim of a worker succeeds; a loser tries the next worker or starts cold.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubesessions.api import names
from kubesessions.api.models import AppSpec, Condition, PoolStrategy, SessionSpec, WarmPoolStatus
from kubesessions.api.names import API_VERSION, JSON
from kubesessions.common.timefmt import rfc3339
from kubesessions.control.act.children import Children
from kubesessions.control.act.worker import WorkerLink
from kubesessions.control.decide import children, pool, suspend
from kubesessions.control.poolmetrics import PoolMetrics
from kubesessions.control.settings import OperatorSettings
from kubesessions.control.state import Key
from kubesessions.kube.kubeapi import Kube, core_path, group_path
from kubesessions.kube.objects import cacheable_pod, newer
from kubesessions.kube.workqueue import WorkQueue

log = logging.getLogger("kubesessions.operator")

# An App's "pool exhausted" Event is posted at most this often (seconds).
EXHAUSTED_EVENT_INTERVAL = 30.0
# Claim patches tried on one worker (conflicts, or errors that may hide a landed patch).
CLAIM_TRIES = 3
# The longest wait before starting pool workers again after they kept exiting (seconds).
MAX_BACKOFF = 300.0


class Pooling:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        apps: Mapping[Key, JSON],
        children: Children,
        app_written: Callable[[JSON], None],
        link: WorkerLink,
    ) -> None:
        self.kube = kube
        self.link = link
        self.settings = settings
        self.apps = apps  # the controller's App cache, read only: it is told of our writes
        self.app_written = app_written
        self.children = children
        self.members: dict[Key, dict[str, JSON]] = {}  # (namespace, app) -> unclaimed workers
        self.tokens: dict[Key, str] = {}
        self.unwritten_claims: Counter[Key] = Counter()  # not yet in status.warmPool.claimed
        self.reserved: set[Key] = set()  # (namespace, pod) being claimed by this operator now
        self.exhausted_at: dict[Key, float] = {}
        self.unrefilled_since: dict[Key, float] = {}  # the first claim the upkeep has not seen
        self.failures: dict[Key, tuple[int, float]] = {}  # exited pool workers in a row, when last
        self.looked_at: dict[Key, dict[str, float]] = {}  # (namespace, app) -> worker -> last look
        self.metrics = PoolMetrics()
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=4)

    # -- fed by the watches ---------------------------------------------------------------

    def pod_seen(self, body: JSON, deleted: bool) -> None:
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        app = labels.get(names.POOL_LABEL) or labels.get(names.APP_LABEL)
        if not app:
            return
        key = (meta["namespace"], app)
        members = self.members.setdefault(key, {})
        if labels.get(names.POOL_LABEL) and not deleted:
            if newer(body, members.get(meta["name"])):
                members[meta["name"]] = body
        elif members.pop(meta["name"], None) is None:
            return  # a Session's worker that was never in this pool
        else:
            self.looked_at.get(key, {}).pop(meta["name"], None)
        self.queue.add(key)

    def app_seen(self, body: JSON, deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            # Its workers go with it (their ownerReferences); their events clear the cache.
            self.tokens.pop(key, None)
            self.unwritten_claims.pop(key, None)
            self.unrefilled_since.pop(key, None)
            self.looked_at.pop(key, None)
            self.metrics.forget(key)
            return
        self.queue.add(key)

    # -- the pool -------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        body = self.apps.get(key)
        if body is None:
            return None
        if (pause := self._refill_pause(key)) is not None:
            return pause
        try:
            app = AppSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None  # the API server refused it already; the Sessions report it
        await self._write_condition(key, body, app)
        size = app.warmPool.size if app.warmPool else 0
        strategy = app.warmPool.strategy if app.warmPool else PoolStrategy.RECREATE
        members = self.members.setdefault(key, {})
        if not size and not members and not (body.get("status") or {}).get("warmPool"):
            return None  # no pool, never had one: nothing to keep, nothing to write
        app_uid = body["metadata"]["uid"]
        seen = [pool.member(p) for p in self._owned(key).values()]
        plan = pool.plan(size, strategy, pool.template_hash(app), seen)
        look_again = self._backoff(key, seen)
        if plan.create and look_again is None:
            await self._ensure_secret(key, body["metadata"]["uid"])
            await self.children.ensure_policy(key[0])
            manifests = [
                pool.build_pod(
                    key[0], key[1], body["metadata"]["uid"], app, idle_grace=self.settings.idle_grace
                )
                for _ in range(plan.create)
            ]
            for manifest in manifests:
                members[manifest["metadata"]["name"]] = manifest  # counted as starting until its event
            log.info("app %s/%s: starting %d warm pool worker(s)", *key, len(manifests))
            self.metrics.upkeep["create pods"] += len(manifests)
            created = await asyncio.gather(
                *(self.children.create("pods", key[0], m) for m in manifests), return_exceptions=True
            )
            for manifest, outcome in zip(manifests, created, strict=True):
                if isinstance(outcome, BaseException):
                    members.pop(manifest["metadata"]["name"], None)
                    log.warning("app %s/%s: could not create a pool worker: %s", *key, outcome)
        for name in plan.delete:
            member = members.pop(name, None)
            self._count("delete pods")
            # Its uid when it has one: planned for deletion as the App's own (``_owned``).
            await self.children.delete_owned(
                key[0], "pods", name, app_uid, member["metadata"].get("uid") if member else None
            )
        await self._write_status(key, body, size)
        next_look = await self._look(key, app)
        if look_again is None or (next_look is not None and next_look < look_again):
            return next_look
        return look_again

    def _owned(self, key: Key) -> dict[str, JSON]:
        """The pool workers of App ``key`` that it owns: only these are counted, deleted or
        claimed (a pod that merely carries the pool's label may be anyone's)."""
        app = self.apps.get(key)
        if app is None:
            return {}
        uid = app["metadata"]["uid"]
        return {name: p for name, p in self.members.get(key, {}).items() if children.owned_by(p, uid)}

    async def _look(self, key: Key, app: AppSpec) -> float | None:
        """Look at the ready unclaimed workers that are due; seconds until the next is due."""
        looked_at = self.looked_at.setdefault(key, {})
        members = self._owned(key)
        now = time.monotonic()
        free = [pool.member(p) for name, p in members.items() if (key[0], name) not in self.reserved]
        due, next_in = pool.looks_due(
            free, looked_at, pool.look_interval(key[1], app, self.settings.idle_grace), now
        )
        if due:
            pods = [members[name] for name in due]  # as they are now: the watch may change members
            token = await self.token(key)
            gpus = children.gpu_summary(app, SessionSpec(app=key[1])).requested
            await asyncio.gather(*(self.link.look_at_pool_worker(key, pod, token, gpus) for pod in pods))
            looked_at.update(dict.fromkeys(due, now))
        return next_in

    def _refill_pause(self, key: Key) -> float | None:
        """Seconds the upkeep still waits after a claim (see :func:`pool.refill_pause`)."""
        pause = pool.refill_pause(self.unrefilled_since.get(key), time.monotonic())
        if pause is None:
            self.unrefilled_since.pop(key, None)
        return pause

    def _backoff(self, key: Key, seen: list[pool.Member]) -> float | None:
        """Seconds to wait before starting more pool workers when they keep failing (an App
        whose setup fails must not restart workers in a hot loop); None: start them now."""
        failed = [m.name for m in seen if m.failed and not m.deleting]
        if any(m.ready for m in seen):
            self.failures.pop(key, None)
        if failed:
            failures, _ = self.failures.get(key, (0, 0.0))
            self.failures[key] = (failures + len(failed), time.monotonic())
            log.warning("app %s/%s: pool workers failed: %s", *key, ", ".join(failed))
        if key not in self.failures:
            return None
        failures, last = self.failures[key]
        wait = min(MAX_BACKOFF, 2.0**failures) - (time.monotonic() - last)
        return wait if wait > 0 else None

    async def _write_status(self, key: Key, body: JSON, size: int) -> None:
        members = [pool.member(p) for p in self._owned(key).values()]
        recorded = WarmPoolStatus.model_validate((body.get("status") or {}).get("warmPool") or {})
        pending = self.unwritten_claims[key]
        desired = pool.status(key[1], size, members, recorded.claimed + pending)
        self.metrics.observe_pool(key, desired)
        if desired == recorded:
            return
        self._count("patch apps/status")
        try:
            written = await self.kube.merge_patch(
                group_path(API_VERSION, key[0], "apps", key[1]) + "/status",
                {"status": {"warmPool": desired.model_dump()}},
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # the App is gone
            raise
        self.app_written(written)
        self.unwritten_claims[key] -= pending

    async def _write_condition(self, key: Key, body: JSON, app: AppSpec) -> None:
        """The App's SuspendAvailable condition, written when it changes (an App without
        spec.suspend.enabled has none)."""
        enabled = bool(app.suspend and app.suspend.enabled)
        wanted = suspend.app_condition(
            enabled, self.settings.state_store is not None, self.link.suspendable.get(key)
        )
        conditions = [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions") or []]
        old = next((c for c in conditions if c.type == suspend.SUSPEND_AVAILABLE), None)
        if wanted is None and old is None:
            return
        if wanted is not None and old is not None and (old.status == "True", old.reason) == wanted[:2]:
            return
        kept = [c for c in conditions if c.type != suspend.SUSPEND_AVAILABLE]
        if wanted is not None:
            ok, reason, message = wanted
            kept.append(
                Condition(
                    type=suspend.SUSPEND_AVAILABLE,
                    status="True" if ok else "False",
                    reason=reason,
                    message=message,
                    lastTransitionTime=rfc3339(),
                    observedGeneration=body["metadata"].get("generation"),
                )
            )
        self._count("patch apps/status")
        try:
            written = await self.kube.merge_patch(
                group_path(API_VERSION, key[0], "apps", key[1]) + "/status",
                {"status": {"conditions": [c.model_dump(exclude_none=True) for c in kept]}},
            )
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        self.app_written(written)

    async def _ensure_secret(self, key: Key, app_uid: str) -> None:
        if key in self.tokens:
            return
        token = children.new_token()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": pool.secret_name(key[1]),
                "namespace": key[0],
                "labels": {names.MANAGED_BY: names.MANAGER, names.APP_LABEL: key[1]},
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "App",
                        "name": key[1],
                        "uid": app_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "data": {names.TOKEN_KEY: base64.b64encode(token.encode()).decode()},
        }
        self.metrics.upkeep["create secrets"] += 1
        existed, _ = await self.children.create("secrets", key[0], secret)
        if existed:
            await self.token(key)  # it existed (the App's): its token stands
        else:
            self.tokens[key] = token

    async def token(self, key: Key) -> str:
        """The pool token of App ``key`` (what its unclaimed workers accept)."""
        if key not in self.tokens:
            secret = await self.kube.get(core_path(key[0], "secrets", pool.secret_name(key[1])))
            self.tokens[key] = base64.b64decode(secret["data"][names.TOKEN_KEY]).decode()
        return self.tokens[key]

    def _count(self, what: str) -> None:
        """A write of the pool's upkeep, counted apart (not a Session's; the API client counts
        every write in the operator's total)."""
        self.metrics.upkeep[what] += 1

    # -- claims ---------------------------------------------------------------------------

    async def claim(
        self, session: children.SessionRef, app_name: str, app: AppSpec, spec: SessionSpec
    ) -> JSON | None:
        """Make a ready pool worker the Session's (the conditional pod patch); None: start cold."""
        if app.warmPool is None or app.warmPool.size == 0:
            return None
        key = (session.namespace, app_name)
        refusal = pool.claim_refusal(app, spec)
        if refusal is not None:
            log.info(
                "session %s/%s: starts cold, not from the pool: %s",
                session.namespace,
                session.name,
                refusal,
                extra={"session": session.name, "namespace": session.namespace},
            )
            self.metrics.miss(key)
            return None
        members = self.members.get(key, {})
        found = pool.candidates(
            app.warmPool.strategy,
            pool.template_hash(app),
            [pool.member(p) for p in self._owned(key).values()],
        )
        for candidate in found:
            if (session.namespace, candidate.name) in self.reserved:
                continue
            self.reserved.add((session.namespace, candidate.name))
            try:
                pod = await self._take(session, candidate)
            finally:
                self.reserved.discard((session.namespace, candidate.name))
            if pod is not None:
                log.info(
                    "session %s/%s: claimed warm pool worker %s",
                    session.namespace,
                    session.name,
                    candidate.name,
                    extra={"session": session.name, "namespace": session.namespace},
                )
                members.pop(candidate.name, None)
                self.looked_at.get(key, {}).pop(candidate.name, None)
                self.unrefilled_since.setdefault(key, time.monotonic())
                self.unwritten_claims[key] += 1
                self.queue.add(key)  # a replacement, and the new counts
                return cacheable_pod(pod)  # the controller caches it until the watch's event
        self.metrics.miss(key)
        await self._exhausted(key, session.name, len(members))
        self.queue.add(key)
        return None

    async def _take(self, session: children.SessionRef, candidate: pool.Member) -> JSON | None:
        """The claim patch; on a conflict, or an error after which the patch may or may not have
        landed, read the worker: ours already, or tried again while it is still free and ready."""
        for _ in range(CLAIM_TRIES):
            try:
                reply = await self._patch_claim(session, candidate)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "session %s/%s: claiming %s failed (%s); reading it back",
                    session.namespace,
                    session.name,
                    candidate.name,
                    getattr(exc, "status", None) or exc,
                    extra={"session": session.name, "namespace": session.namespace},
                )
                reply = None
            if reply is not None:
                return reply
            try:
                fresh = await self.kube.get(core_path(session.namespace, "pods", candidate.name))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            if pool.claimed_at(fresh, session.uid) is not None:
                return fresh  # the failed-looking patch had landed
            candidate = pool.member(fresh)
            labels = fresh["metadata"].get("labels") or {}
            if not labels.get(names.POOL_LABEL) or not candidate.ready or candidate.deleting:
                return None  # someone else's now
        return None

    async def _patch_claim(self, session: children.SessionRef, candidate: pool.Member) -> JSON | None:
        """The conditional patch: the claimed pod, or None on 409 Conflict (or 404, as the read
        after it shows); raises on any other error."""
        try:
            return await self.kube.merge_patch(
                core_path(session.namespace, "pods", candidate.name),
                pool.claim_patch(candidate, session, rfc3339()),
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise

    def handed_over(self, key: Key, started: float) -> None:
        """A claimed worker took its session: the claim's time, counted for App ``key``."""
        self.metrics.hit(key, time.monotonic() - started)

    async def claimed_workers(self, namespaces: list[str]) -> dict[Key, JSON]:
        """Pool workers claimed by a Session, by (namespace, session), in ``namespaces`` (all
        when empty): read when an operator begins to act, for claims an earlier one made."""
        selector = f"{names.MANAGED_BY}={names.MANAGER},{names.SESSION_LABEL}"
        paths = [core_path(ns, "pods") for ns in namespaces] or ["/api/v1/pods"]
        found: dict[Key, JSON] = {}
        for path in paths:
            for pod in (await self.kube.get(path, labelSelector=selector))["items"] or []:
                meta = pod["metadata"]
                if (meta.get("annotations") or {}).get(names.CLAIMED_BY) and not meta.get(
                    "deletionTimestamp"
                ):
                    found[(meta["namespace"], meta["labels"][names.SESSION_LABEL])] = cacheable_pod(pod)
        return found

    async def _exhausted(self, key: Key, session: str, members: int) -> None:
        """A Warning Event on the App, at most every EXHAUSTED_EVENT_INTERVAL seconds."""
        now = time.monotonic()
        if now - self.exhausted_at.get(key, -EXHAUSTED_EVENT_INTERVAL) < EXHAUSTED_EVENT_INTERVAL:
            return
        self.exhausted_at[key] = now
        app = self.apps.get(key)
        if app is None:
            return
        message = f"no ready warm pool worker for session {session} ({members} starting): it starts cold"
        event = children.build_event("App", app["metadata"], "Warning", "PoolExhausted", message)
        self._count("create events")
        try:
            await self.kube.create(core_path(key[0], "events"), event)
        except ApiException as exc:
            log.warning("could not post the PoolExhausted event for app %s/%s: %s", *key, exc.reason)
