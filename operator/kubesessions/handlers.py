"""Thin kopf handlers: record what the watches see and hand the Session's key to the controller.

Only raw event handlers are used: they keep no per-object state in the API (no diff-base
annotations, no finalizers), so deleting a Session deletes its children through their
ownerReferences even while the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from aiohttp import web

from . import accounting
from .builders import MANAGED_BY, MANAGER
from .controller import Controller, OperatorSettings
from .kubeapi import api_client
from .leader import LeaderElector, LeaseSettings
from .models import GROUP, VERSION
from .poolmetrics import writes_lines

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


def build_registry(
    settings: OperatorSettings,
    lost: asyncio.Event,
    stop: asyncio.Event,
    lease: LeaseSettings | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",  # noqa: S104
) -> kopf.OperatorRegistry:
    """``lease``: lead through this Lease before acting (None: act at once, a single replica);
    ``lost`` is set when leadership is lost, and then ``stop``, kopf's stop flag."""
    registry = kopf.OperatorRegistry()
    state: dict[str, Any] = {}

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
        api = await api_client()
        ctl = Controller(api, operator_settings)
        state["controller"] = ctl
        elector = LeaderElector(api, lease) if lease is not None else None
        state["elector"] = elector
        state["tasks"] = [asyncio.create_task(_lead(ctl, elector, lost, stop), name="leading")]
        if metrics_port is not None:
            state["metrics"] = await _serve_metrics(ctl, elector, metrics_host, metrics_port)

    operator_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        try:
            for task in state.get("tasks", []):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if state.get("elector") is not None and not lost.is_set():
                await state["elector"].release()
            if "metrics" in state:
                await state["metrics"].cleanup()
            if "controller" in state:
                await state["controller"].close()
        finally:
            # kopf waits for its task waiting on the stop flag as for any task still running:
            # 5 s on every SIGTERM, were the flag not set (also when a step above failed).
            stop.set()

    @kopf.on.event(GROUP, VERSION, "sessions", registry=registry)
    async def session_event(event: kopf.RawEvent, **_: Any) -> None:
        state["controller"].session_seen(event["object"], deleted=event.get("type") == "DELETED")

    @kopf.on.event(GROUP, VERSION, "apps", registry=registry)
    async def app_event(event: kopf.RawEvent, **_: Any) -> None:
        state["controller"].app_seen(event["object"], deleted=event.get("type") == "DELETED")

    @kopf.on.event("", "v1", "pods", labels={MANAGED_BY: MANAGER}, registry=registry)
    async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        state["controller"].pod_seen(event["object"], deleted=event.get("type") == "DELETED")

    return registry


async def _lead(
    ctl: Controller, elector: LeaderElector | None, lost: asyncio.Event, stop: asyncio.Event
) -> None:
    """Act only while leading. Before that the watches still fill the controller's caches and
    queue (they hold only what the API holds), so a new leader starts from a warm cache."""
    if elector is not None:
        await elector.acquire()
    acting = asyncio.create_task(ctl.act(), name="act")
    try:
        if elector is None:
            await acting
        else:
            await elector.hold()
            # Like controller-runtime: a replica that lost its Lease exits (and restarts as a
            # standby) rather than risk acting beside the new leader.
            lost.set()
            stop.set()
    finally:
        acting.cancel()
        await asyncio.gather(acting, return_exceptions=True)


async def _serve_metrics(
    ctl: Controller, elector: LeaderElector | None, host: str, port: int
) -> web.AppRunner:
    """Prometheus text: API writes by verb and resource, leadership, reconciles, GPU-seconds and
    outcomes."""

    async def metrics(_: web.Request) -> web.Response:
        lines = writes_lines(
            "kubesessions_operator_api_writes_total", "API writes made by the operator.", ctl.writes
        )
        lines += [
            "# HELP kubesessions_operator_sessions Sessions in the controller's cache.",
            "# TYPE kubesessions_operator_sessions gauge",
            f"kubesessions_operator_sessions {len(ctl.sessions)}",
            "# HELP kubesessions_operator_leading 1 while this replica acts (leads, or runs alone).",
            "# TYPE kubesessions_operator_leading gauge",
            f"kubesessions_operator_leading {int(elector is None or elector.leading)}",
            "# HELP kubesessions_operator_reconciles_total Reconciles finished, by result.",
            "# TYPE kubesessions_operator_reconciles_total counter",
            *(
                f'kubesessions_operator_reconciles_total{{result="{r}"}} {ctl.queue.handled[r]}'
                for r in ("ok", "error")
            ),
            # A standby's queue only collects keys for when it leads: nothing waits on it.
            "# HELP kubesessions_operator_workqueue_depth Sessions waiting for a reconcile worker (0 on a standby).",
            "# TYPE kubesessions_operator_workqueue_depth gauge",
            f"kubesessions_operator_workqueue_depth {ctl.queue.depth if elector is None or elector.leading else 0}",
            *ctl.accounting.render(),
            *accounting.session_gauges(
                ctl.sessions.values(),
                sum(1 for t in ctl.tracked.values() if t.unreachable),
                datetime.datetime.now(datetime.UTC),
            ),
            *ctl.pool.metrics.lines(),
        ]
        if elector is not None:
            lines += [
                "# HELP kubesessions_operator_lease_changes_seen_total Changes of the Lease this replica saw.",
                "# TYPE kubesessions_operator_lease_changes_seen_total counter",
                f"kubesessions_operator_lease_changes_seen_total {elector.changes_seen}",
            ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def run(
    settings: OperatorSettings,
    lease: LeaseSettings | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",  # noqa: S104
) -> None:
    # kopf says "Handler ... succeeded" at info for every watch event: noise, and CPU in a
    # burst. Its warnings and errors about objects still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    async def operate() -> bool:
        lost, stop = asyncio.Event(), asyncio.Event()
        registry = build_registry(settings, lost, stop, lease, metrics_port, metrics_host)
        await kopf.operator(
            registry=registry,
            namespaces=settings.namespaces,
            clusterwide=not settings.namespaces,
            standalone=True,
            stop_flag=stop,
        )
        return lost.is_set()

    if asyncio.run(operate()):
        sys.exit("leadership lost: exiting so that this replica restarts as a standby")
