"""A Session's children (token Secret, Service, worker Pod): create-if-absent, delete, and the
sweep of children whose Session is gone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api import names
from kubesessions.api.names import JSON
from kubesessions.control.decide import children
from kubesessions.control.settings import OperatorSettings
from kubesessions.control.state import Key, Tracked
from kubesessions.kube.kubeapi import Kube, core_path, group_path

log = logging.getLogger("kubesessions.operator")
ALL_CHILDREN = frozenset({"secret", "service", "pod"})
DELETED, GONE, NOT_OURS = "deleted", "gone", "not ours"  # what :meth:`Children.delete_owned` found


class NameConflict(Exception):
    """Names that children need are held by objects their owner does not own: none is adopted,
    changed or deleted. ``passing``: every one of them is being deleted (the name frees up)."""

    def __init__(self, reasons: list[str], passing: bool) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.passing = reasons, passing

    @classmethod
    def of(cls, conflicts: list[NameConflict]) -> NameConflict:
        return cls([r for c in conflicts for r in c.reasons], all(c.passing for c in conflicts))


class Children:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._policies: dict[str, asyncio.Task[None]] = {}  # namespace -> its policy applied

    async def ensure(
        self,
        key: Key,
        ref: children.SessionRef,
        app_name: str | None,
        tracked: Tracked,
        pod: JSON | None,
    ) -> bool:
        """Create-if-absent, the Secret (with the Service) before the pod; one of the Session's
        own already there counts as done, anyone else's raises :class:`NameConflict`. ``pod`` is
        the pod's manifest, None when the pod exists. True when this call created the pod.

        Not all three at once: a pod that reaches its node before its token Secret exists waits
        for the kubelet's retry (CreateContainerConfigError), seconds rather than one round trip.
        """
        if pod is not None:
            await self.ensure_policy(key[0])  # no worker without its policy
        await self.ensure_access(key, ref, app_name, tracked)
        if pod is None or "pod" in tracked.children:
            tracked.children.setdefault("pod", "")
            return False
        existed, found = await self.create("pods", key[0], pod)
        if not existed:
            tracked.pod_created_at = time.monotonic()
        tracked.children["pod"] = found["metadata"]["uid"]
        return not existed

    async def ensure_access(
        self, key: Key, ref: children.SessionRef, app_name: str | None, tracked: Tracked
    ) -> None:
        """The Session's token Secret and Service, create-if-absent (one round trip)."""
        first: dict[str, Awaitable[tuple[bool, JSON]]] = {}
        if "secret" not in tracked.children:
            tracked.token = tracked.token or children.session_token(self.settings.token_key, ref)
            first["secret"] = self.create(
                "secrets", key[0], children.build_secret(ref, app_name, tracked.token)
            )
        if "service" not in tracked.children:
            first["service"] = self.create("services", key[0], children.build_service(ref, app_name))
        # Both outcomes awaited: what was created is recorded (and so deleted) even if the other failed.
        outcomes = dict(
            zip(first, await asyncio.gather(*first.values(), return_exceptions=True), strict=True)
        )
        for kind, outcome in outcomes.items():
            if not isinstance(outcome, BaseException):
                existed, found = outcome
                tracked.children[kind] = found["metadata"]["uid"]
                if kind == "secret" and existed:
                    tracked.token = None  # an earlier run's token stands; read it when needed
        failed = [o for o in outcomes.values() if isinstance(o, BaseException)]
        conflicts = [o for o in failed if isinstance(o, NameConflict)]
        if conflicts:
            raise NameConflict.of(conflicts)
        if failed:
            raise failed[0]

    async def ensure_policy(self, namespace: str) -> None:
        """The workers' NetworkPolicy in ``namespace``, applied once per namespace while this
        operator runs (sessions that start together wait on the same write)."""
        peers = self.settings.network_policy
        if peers is None:
            return
        task = self._policies.get(namespace)
        if task is None:
            task = self._policies[namespace] = asyncio.create_task(self._apply_policy(namespace, peers))
        try:
            await asyncio.shield(task)
        except Exception:
            if self._policies.get(namespace) is task:
                del self._policies[namespace]  # the next session tries again
            raise

    async def _apply_policy(self, namespace: str, peers: children.PolicyPeers) -> None:
        # Server-side apply: one write creates it or brings an older one up to date.
        await self.kube.apply(
            group_path("networking.k8s.io/v1", namespace, "networkpolicies", names.WORKER_POLICY),
            children.build_network_policy(namespace, peers),
            names.MANAGER,
        )
        log.info("network policy %s/%s applied", namespace, names.WORKER_POLICY)

    async def create(self, kind: str, namespace: str, body: JSON) -> tuple[bool, JSON]:
        """Create ``body`` (``kind`` a core resource: pods, services, secrets), owned as its
        ownerReference says. (existed already, the object): an object of that name counts as
        this one only if it has the same owner; anyone else's raises :class:`NameConflict`."""
        try:
            return False, await self.kube.create(core_path(namespace, kind), body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        name = body["metadata"]["name"]
        found = await self.kube.get(core_path(namespace, kind, name))  # a 404 (gone meanwhile): try again
        owner = body["metadata"]["ownerReferences"][0]
        if not children.owned_by(found, owner["uid"]):
            reason = children.name_conflict(kind, found, owner)
            raise NameConflict([reason], passing=children.passing(found, owner))
        return True, found

    async def annotate_pod(self, namespace: str, pod: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into a worker pod's (gone already: nothing to do)."""
        try:
            await self.kube.merge_patch(
                core_path(namespace, "pods", pod), {"metadata": {"annotations": annotations}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete(
        self, key: Key, session_uid: str, tracked: Tracked | None, pod_name: str | None = None
    ) -> None:
        """Delete the Session's pod, Service and Secret: only those it owns. ``pod_name``: the
        worker's when it is not the Session's name (a claimed pool worker)."""
        namespace, name = key
        known = tracked.children if tracked else {}
        for kind, resource, child in (
            ("pod", "pods", pod_name or name),
            ("service", "services", name),
            ("secret", "secrets", children.token_secret_name(name)),
        ):
            if await self.delete_owned(namespace, resource, child, session_uid, known.get(kind)) == NOT_OURS:
                log.warning(
                    "session %s/%s: %s %s is not the session's: left alone",
                    namespace,
                    name,
                    children.KINDS[resource],
                    child,
                    extra={"session": name, "namespace": namespace},
                )
        if tracked:
            tracked.children.clear()

    async def delete_owned(
        self, namespace: str, resource: str, name: str, owner_uid: str, uid: str | None = None
    ) -> str:
        """Delete object ``name`` if ``owner_uid`` owns it: DELETED, GONE or NOT_OURS. ``uid``:
        the object's, known to be the owner's (else it is read first). The delete names the uid
        as its precondition: an object that took the name meanwhile is never deleted."""
        path = core_path(namespace, resource, name)
        for _ in range(2):  # a known uid that turns out stale: read once what holds the name now
            if not uid:
                try:
                    found = await self.kube.get(path)
                except ApiException as exc:
                    if exc.status == 404:
                        return GONE
                    raise
                if not children.owned_by(found, owner_uid):
                    return NOT_OURS
                uid = found["metadata"]["uid"]
            try:
                await self.kube.delete(path, uid=uid)
                return DELETED
            except ApiException as exc:
                if exc.status == 404:
                    return GONE
                if exc.status != 409:
                    raise
            uid = None
        return NOT_OURS

    async def sweep_orphans(self, session_exists: Callable[[str, str], Awaitable[bool]]) -> int:
        """Delete pods, Services and Secrets labelled as ours whose Session no longer exists."""
        selector = f"{names.MANAGED_BY}={names.MANAGER}"
        removed = 0
        for kind in ("pods", "services", "secrets"):
            items: list[JSON] = []
            for path in [core_path(ns, kind) for ns in self.settings.namespaces] or [f"/api/v1/{kind}"]:
                items += (await self.kube.get(path, labelSelector=selector))["items"] or []
            for item in items:
                meta = item["metadata"]
                session = (meta.get("labels") or {}).get(names.SESSION_LABEL)
                if not session or await session_exists(meta["namespace"], session):
                    continue
                try:
                    # The one listed: another object may have taken its name since.
                    await self.kube.delete(core_path(meta["namespace"], kind, meta["name"]), uid=meta["uid"])
                    removed += 1
                    log.info("deleted orphan %s %s/%s", kind[:-1], meta["namespace"], meta["name"])
                except ApiException as exc:
                    if exc.status not in (404, 409):
                        raise
        return removed
