"""A Session's children (token Secret, Service, worker Pod): create-if-absent, delete, and the
sweep of children whose Session is gone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from kubernetes_asyncio.client.exceptions import ApiException

from . import builders
from .kubeapi import Kube, core_path, group_path
from .sessionstate import JSON, Key, OperatorSettings, Tracked

log = logging.getLogger("kubesessions.operator")
ALL_CHILDREN = frozenset({"secret", "service", "pod"})


class Children:
    def __init__(self, kube: Kube, settings: OperatorSettings, writes: Counter[str]) -> None:
        self.kube = kube
        self.settings = settings
        self.writes = writes
        self._policies: dict[str, asyncio.Task[None]] = {}  # namespace -> its policy applied

    async def ensure(
        self,
        key: Key,
        ref: builders.SessionRef,
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
        self, key: Key, ref: builders.SessionRef, app_name: str | None, tracked: Tracked
    ) -> None:
        """The Session's token Secret and Service, create-if-absent (one round trip)."""
        first: dict[str, Awaitable[bool]] = {}
        if "secret" not in tracked.children:
            tracked.token = tracked.token or builders.new_token()
            first["secret"] = self.create(
                "secrets", key[0], builders.build_secret(ref, app_name, tracked.token)
            )
        if "service" not in tracked.children:
            first["service"] = self.create("services", key[0], builders.build_service(ref, app_name))
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

    async def _apply_policy(self, namespace: str, peers: builders.PolicyPeers) -> None:
        # Server-side apply: one write creates it or brings an older one up to date.
        self.writes["apply networkpolicies"] += 1
        await self.kube.apply(
            group_path("networking.k8s.io/v1", namespace, "networkpolicies", builders.WORKER_POLICY),
            builders.build_network_policy(namespace, peers),
            builders.MANAGER,
        )
        log.info("network policy %s/%s applied", namespace, builders.WORKER_POLICY)

    async def create(self, kind: str, namespace: str, body: JSON) -> bool:
        """Create (``kind`` a core resource: pods, services, secrets); True when it existed already."""
        self.writes[f"create {kind}"] += 1
        try:
            await self.kube.create(core_path(namespace, kind), body)
        except ApiException as exc:
            if exc.status == 409:
                return True
            raise
        return False

    async def delete(self, key: Key, tracked: Tracked | None, pod_name: str | None = None) -> None:
        """``pod_name``: the worker's when it is not the Session's name (a claimed pool worker)."""
        namespace, name = key
        for kind, child in (
            ("pods", pod_name or name),
            ("services", name),
            ("secrets", builders.token_secret_name(name)),
        ):
            self.writes[f"delete {kind}"] += 1
            try:
                await self.kube.delete(core_path(namespace, kind, child))
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if tracked:
            tracked.children.clear()

    async def sweep_orphans(self, session_exists: Callable[[str, str], Awaitable[bool]]) -> int:
        """Delete pods, Services and Secrets labelled as ours whose Session no longer exists."""
        selector = f"{builders.MANAGED_BY}={builders.MANAGER}"
        removed = 0
        for kind in ("pods", "services", "secrets"):
            items: list[JSON] = []
            for path in [core_path(ns, kind) for ns in self.settings.namespaces] or [f"/api/v1/{kind}"]:
                items += (await self.kube.get(path, labelSelector=selector))["items"] or []
            for item in items:
                meta = item["metadata"]
                session = (meta.get("labels") or {}).get(builders.SESSION_LABEL)
                if not session or await session_exists(meta["namespace"], session):
                    continue
                self.writes[f"delete {kind}"] += 1
                try:
                    await self.kube.delete(core_path(meta["namespace"], kind, meta["name"]))
                    removed += 1
                    log.info("deleted orphan %s %s/%s", kind[:-1], meta["namespace"], meta["name"])
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        return removed
