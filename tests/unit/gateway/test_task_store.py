"""The inference.sh tasks a replica keeps are bounded by bytes, and what it forgets is counted."""

from __future__ import annotations

import pytest
from aiohttp import web

from kubesessions.gateway import compat
from kubesessions.gateway.context import METRICS, SETTINGS
from kubesessions.gateway.metrics import Metrics
from kubesessions.gateway.sessions import GatewaySettings
from kubesessions.gateway.taskstatus import Status

from ...promtools import check_metrics

pytestmark = pytest.mark.unit
MIB = 1 << 20


def finished(store: compat.Tasks, task_id: str, input_bytes: int, output_bytes: int) -> compat.Task:
    task = compat.Task(task_id, "ns", "echo", "s-1", None, input_bytes=input_bytes)
    store.add(task)
    task.output_bytes = output_bytes
    task.update(Status.COMPLETED, output="...")
    store.finished(task)
    return task


def test_finished_tasks_are_kept_within_the_byte_budget_oldest_forgotten_first() -> None:
    store = compat.Tasks(20 * MIB)
    running = compat.Task("t-run", "ns", "echo", "s-1", None, input_bytes=8 * MIB)
    store.add(running)
    for n in range(5):  # 8 MiB in, 8 MiB out: 16 MiB each, one fits in the budget
        finished(store, f"t-{n}", 8 * MIB, 8 * MIB)
    assert [store.find(f"t-{n}") is not None for n in range(5)] == [False] * 4 + [True]
    assert store.find("t-run") is running, "a running task is never forgotten"
    assert store.evicted == 4 and store.bytes <= 20 * MIB


def test_a_failed_task_counts_its_error() -> None:
    store = compat.Tasks(1000)
    task = compat.Task("t-f", "ns", "echo", "s-1", None, input_bytes=10)
    store.add(task)
    task.update(Status.FAILED, error="x" * 400)
    store.finished(task)
    assert store.bytes == compat.TASK_OVERHEAD + 10 + 400
    finished(store, "t-next", 10, 10)
    assert store.find("t-f") is None and store.evicted == 1


def test_the_task_store_metrics_pass_promtool() -> None:
    app = web.Application()
    app[SETTINGS] = GatewaySettings(task_bytes=MIB)
    app[METRICS] = Metrics()
    compat.register(app)
    finished(app[compat.TASKS], "t-0", MIB, 1)
    finished(app[compat.TASKS], "t-1", 1, 1)
    text = app[METRICS].render()
    check_metrics(text)
    assert "kubesessions_gateway_tasks_evicted_total 1\n" in text
    assert f"kubesessions_gateway_task_bytes {compat.TASK_OVERHEAD + 2}\n" in text
