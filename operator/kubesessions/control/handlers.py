"""Thin kopf handlers: record what the watches of Sessions and Apps see and hand it to the
controller; start and stop the operator's process with kopf (which watches the Pods itself).

Only raw event handlers are used: they keep no per-object state in the API (no diff-base
annotations, no finalizers), so deleting a Session deletes its children through their
ownerReferences even while the operator is down.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

import kopf

from kubesessions.api.names import GROUP, JSON, VERSION
from kubesessions.control.controller import Controller

log = logging.getLogger("kubesessions.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """No handler here compares old and new objects (raw event handlers only), so no diff base
    is built or kept: kopf would otherwise deep-copy every event's body to build one."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def in_cluster_server(env: Mapping[str, str]) -> str | None:
    """The API server's URL from the `kubernetes` Service variables the kubelet sets in every
    pod; None outside a pod."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator (set once, at start-up)."""
    # kopf's own bookkeeping, should it ever write any, lives under our prefix.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # No watching of namespaces and CRDs: the chart grants no cluster-wide read of them, and
    # kopf retried each refusal for ~90 s before handling any Session (seen on the kubelet
    # node). The served namespaces are given, and the CRDs exist before the operator starts.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # The initial LIST (at start, or after a watch's version expired) in pages: with thousands
    # of Sessions or pods, not one response held whole by the API server and us.
    settings.watching.chunk_size = 500
    settings.networking.request_timeout = 30
    settings.posting.enabled = False  # the controller posts Events for real transitions only
    # kopf keeps a task per object for this long after the object's last event, holding that
    # event's body; its default of 5 s kept ~7 MB more at the peak of 1,000 Sessions created in
    # waves (bench/idle_cost.py: 100 -> 93-94 MB; a 100-Session burst is no different).
    settings.queueing.idle_timeout = 1.0


class Process(Protocol):
    """What the handlers start, stop and feed (:class:`kubesessions.control.process.Process`)."""

    controller: Controller

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_registry(process: Process) -> kopf.OperatorRegistry:
    """The handlers: the process starts with kopf and stops with it; watch events feed its
    controller."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = kopf.login_with_service_account(**kwargs)
        server = in_cluster_server(os.environ)
        if info is not None and server is not None:
            # kopf names the API server kubernetes.default.svc, which needs cluster DNS; the
            # address the kubelet hands every pod works without it (client-go uses it too).
            return dataclasses.replace(info, server=server)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        await process.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await process.stop()

    @kopf.on.event(GROUP, VERSION, "sessions", registry=registry)
    async def session_event(event: kopf.RawEvent, **_: Any) -> None:
        process.controller.session_seen(cast(JSON, event["object"]), deleted=event.get("type") == "DELETED")

    @kopf.on.event(GROUP, VERSION, "apps", registry=registry)
    async def app_event(event: kopf.RawEvent, **_: Any) -> None:
        process.controller.app_seen(cast(JSON, event["object"]), deleted=event.get("type") == "DELETED")

    return registry
