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
        """Create-if-absent, the Secret (with the Service) before the pod; AlreadyExists counts
        as done. ``pod`` is the pod's manifest, None when the pod exists. True when this
        call created the pod.

        Not all three at once: a pod that reaches its node before its token Secret exists waits
        for the kubelet's retry (CreateContainerConfigError), seconds rather than one round trip.
        """
        if pod is not None:
            await self.ensure_policy(key[0])  # no worker without its policy
        await self.ensure_access(key, ref, app_name, tracked)
        if pod is None or "pod" in tracked.children:
            tracked.children.add("pod")
            return False
        created = not await self.create("pods", key[0], pod)
        if created:
            tracked.pod_created_at = time.monotonic()
        tracked.children.add("pod")
        return created

    async def ensure_access(
        self, key: Key, ref: children.SessionRef, app_name: str | None, tracked: Tracked
    ) -> None:
        """The Session's token Secret and Service, create-if-absent (one round trip)."""
        first: dict[str, Awaitable[bool]] = {}
        if "secret" not in tracked.children:
            tracked.token = tracked.token or children.session_token(self.settings.token_key, ref)
            first["secret"] = self.create(
                "secrets", key[0], children.build_secret(ref, app_name, tracked.token)
            )
        if "service" not in tracked.children:
            first["service"] = self.create("services", key[0], children.build_service(ref, app_name))
        existed = dict(zip(first, await asyncio.gather(*first.values()), strict=True))
        if existed.get("secret"):
            tracked.token = None  # someone else's token stands; read it when needed
        tracked.children.update({"secret", "service"})

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

    async def create(self, kind: str, namespace: str, body: JSON) -> bool:
        """Create (``kind`` a core resource: pods, services, secrets); True when it existed already."""
        try:
            await self.kube.create(core_path(namespace, kind), body)
        except ApiException as exc:
            if exc.status == 409:
                return True
            raise
        return False

    async def annotate_pod(self, namespace: str, pod: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into a worker pod's (gone already: nothing to do)."""
        try:
            await self.kube.merge_patch(
                core_path(namespace, "pods", pod), {"metadata": {"annotations": annotations}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete(self, key: Key, tracked: Tracked | None, pod_name: str | None = None) -> None:
        """``pod_name``: the worker's when it is not the Session's name (a claimed pool worker)."""
        namespace, name = key
        for kind, child in (
            ("pods", pod_name or name),
            ("services", name),
            ("secrets", children.token_secret_name(name)),
        ):
            try:
                await self.kube.delete(core_path(namespace, kind, child))
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if tracked:
            tracked.children.clear()

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
                    await self.kube.delete(core_path(meta["namespace"], kind, meta["name"]))
                    removed += 1
                    log.info("deleted orphan %s %s/%s", kind[:-1], meta["namespace"], meta["name"])
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        return removed
