"""One operator process beside kopf's handlers: the controller made at start-up, acting only
while this replica leads (a Lease), the watch of the operator's Pods, the metrics endpoint, and
an orderly stop.

Sessions and Apps come through kopf's handlers (the project is a kopf operator); the Pods do
not: kopf watches every pod of the served namespaces and filters by label on its side, and puts
each event through its per-object machinery, for a handler that only records the body. The
project's own watch loop (``kube.informer``) asks the API server for the operator's pods alone
(a label selector) and decodes them with orjson (docs/performance.md has the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import sys

import kopf
from aiohttp import web

from kubesessions.api.names import JSON, MANAGED_BY, MANAGER
from kubesessions.common.metrics import writes_lines
from kubesessions.control import accounting
from kubesessions.control.controller import Controller
from kubesessions.control.handlers import build_registry
from kubesessions.control.settings import OperatorSettings
from kubesessions.kube.informer import Informer
from kubesessions.kube.kubeapi import api_client, core_path
from kubesessions.kube.leader import LeaderElector, LeaseSettings

log = logging.getLogger("kubesessions.operator")


class Process:
    """Started and stopped by kopf's startup and cleanup handlers. ``lease``: lead through this
    Lease before acting (None: act at once, a single replica). ``lost`` is set when leadership
    is lost, and then ``stop``, kopf's stop flag."""

    controller: Controller

    def __init__(
        self,
        settings: OperatorSettings,
        lease: LeaseSettings | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",  # noqa: S104
    ) -> None:
        self.settings = settings
        self.lease = lease
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.lost, self.stop_flag = asyncio.Event(), asyncio.Event()
        self.elector: LeaderElector | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.metrics: web.AppRunner | None = None

    async def start(self) -> None:
        api = await api_client()
        self.controller = ctl = Controller(api, self.settings)
        self.elector = LeaderElector(api, self.lease) if self.lease is not None else None
        self.tasks = [asyncio.create_task(lead(ctl, self.elector, self.lost, self.stop_flag), name="leading")]
        self.tasks += [
            asyncio.create_task(informer.run(), name=informer.what)
            for informer in pod_informers(ctl, self.settings.namespaces)
        ]
        if self.metrics_port is not None:
            self.metrics = await serve_metrics(ctl, self.elector, self.metrics_host, self.metrics_port)

    async def stop(self) -> None:
        try:
            for task in self.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.elector is not None and not self.lost.is_set():
                await self.elector.release()
            if self.metrics is not None:
                await self.metrics.cleanup()
            if hasattr(self, "controller"):
                await self.controller.close()
        finally:
            # kopf waits for its task waiting on the stop flag as for any task still running:
            # 5 s on every SIGTERM, were the flag not set (also when a step above failed).
            self.stop_flag.set()


def pod_informers(ctl: Controller, namespaces: list[str]) -> list[Informer]:
    """The operator's pods (Sessions' and warm pools' workers) into the controller, on standby
    too (a new leader starts from a warm cache). Like kopf's list, a relist reports each pod
    there is; a pod deleted while the watch was down is found by the controller's reconcile."""
    selector = {"label_selector": f"{MANAGED_BY}={MANAGER}"}

    def listed(pods: list[JSON]) -> None:
        for pod in pods:
            ctl.pod_seen(pod, deleted=False)

    def changed(kind: str, pod: JSON) -> None:
        ctl.pod_seen(pod, deleted=kind == "DELETED")

    paths = {f"pods in {ns}": core_path(ns, "pods") for ns in namespaces} or {"pods": "/api/v1/pods"}
    return [
        Informer(what, ctl.kube.lister(path), (), listed, changed, selector) for what, path in paths.items()
    ]


async def lead(
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


async def serve_metrics(
    ctl: Controller, elector: LeaderElector | None, host: str, port: int
) -> web.AppRunner:
    """Prometheus text: API writes by verb and resource, leadership, reconciles, GPU-seconds and
    outcomes."""

    async def metrics(_: web.Request) -> web.Response:
        lines = writes_lines(
            "kubesessions_operator_api_writes_total", "API writes made by the operator.", ctl.kube.writes
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
    """The operator until it is stopped; exits non-zero when it lost its leadership."""
    # kopf says "Handler ... succeeded" at info for every watch event: noise, and CPU in a
    # burst. Its warnings and errors about objects still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    process = Process(settings, lease, metrics_port, metrics_host)

    async def operate() -> None:
        await kopf.operator(
            registry=build_registry(process),
            namespaces=settings.namespaces,
            clusterwide=not settings.namespaces,
            standalone=True,
            stop_flag=process.stop_flag,
        )

    # On asyncio's loop, not uvloop: with uvloop the 100-Session burst's Session -> Pod p50 was
    # 1.5 s against 0.86-0.9 s on asyncio's, one run each (docs/performance.md).
    asyncio.run(operate())
    if process.lost.is_set():
        sys.exit("leadership lost: exiting so that this replica restarts as a standby")
