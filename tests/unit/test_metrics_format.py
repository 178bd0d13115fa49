"""Every /metrics text we write passes `promtool check metrics`: format and naming rules."""

from __future__ import annotations

import datetime

import pytest

from kubesessions.control.accounting import Accounting, session_gauges
from kubesessions.gateway.metrics import Metrics
from kubesessions_worker import metrics as worker_metrics
from kubesessions_worker.gpu import Device, Snapshot
from kubesessions_worker.runner import State, Status
from kubesessions_worker.stats import CallStats, Held, HeldTime

from ..promtools import check_metrics

pytestmark = pytest.mark.unit


def test_the_worker_metrics_pass_promtool() -> None:
    stats = CallStats(HeldTime(started=0.0))
    stats.outcomes["ok"] += 2
    stats.latency.observe(0.2)
    device = Device(0, "NVIDIA H200", "GPU-0", 2**30, 141 * 2**30, 97.0, 60.0, 300.0)
    status = Status(
        State.READY,
        "s1",
        datetime.datetime.now(datetime.UTC),
        3.0,
        0,
        0,
        2,
        5.0,
        60,
        Held(1.0, 2.0, 2.0, pool=7.0),
    )
    check_metrics(worker_metrics.render(stats, status, Snapshot(True, devices=(device,))))


def test_the_operator_accounting_passes_promtool() -> None:
    acc = Accounting()
    body = {"metadata": {"creationTimestamp": "2030-01-01T00:00:00Z"}, "spec": {"app": "llm"}}
    acc.observe(
        ("ns", "s1"),
        {**body, "status": {"gpus": {"requested": 1}}},
        {"heldSeconds": {"starting": 1, "busy": 1, "idle": 2}},
    )
    acc.observe_pool("ns", "llm", "llm-pool-1", {"heldSeconds": {"pool": 30}}, gpus=1)
    acc.transition(body, "Starting", {"phase": "Ready", "readyAt": "2030-01-01T00:00:03Z"})
    acc.transition(body, "Ready", {"phase": "Closed", "reason": "ClosedByUser"})
    gauges = session_gauges(
        [{**body, "status": {"phase": "Starting"}}], 0, datetime.datetime.now(datetime.UTC)
    )
    check_metrics("\n".join([*acc.render(), *gauges]) + "\n")


def test_the_gateway_metrics_pass_promtool_with_each_family_once() -> None:
    m = Metrics()
    m.observe("/v1/run", 200, "", 0.05)
    m.observe("/v1/run", 503, "WORKER_UNAVAILABLE", 0.01)
    m.gauge("kubesessions_gateway_cached_sessions", "Sessions in the cache.", lambda: 3)
    m.counter("kubesessions_gateway_sessions_created_total", "Sessions the gateway created.", lambda: 1)
    text = m.render()
    check_metrics(text)
    assert text.count("# TYPE kubesessions_gateway_sessions_created_total counter") == 1
