"""Prometheus text exposition (format 0.0.4) of the worker's counters, written by hand:
a dozen series do not need a client library in the image."""

from __future__ import annotations

from .gpu import Snapshot
from .runner import State, Status
from .stats import CallStats, Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(stats: CallStats, status: Status, gpu: Snapshot) -> str:
    p = "kubesessions_worker"
    lines = [
        f"# HELP {p}_calls_total Calls run, by outcome.",
        f"# TYPE {p}_calls_total counter",
        *(f'{p}_calls_total{{outcome="{k}"}} {v}' for k, v in sorted(stats.outcomes.items())),
        f"# HELP {p}_rejected_total Calls refused before they ran, by problem code.",
        f"# TYPE {p}_rejected_total counter",
        *(f'{p}_rejected_total{{code="{k}"}} {v}' for k, v in sorted(stats.rejected.items())),
        f"# HELP {p}_call_duration_seconds Time a call ran (excluding its wait in the queue).",
        f"# TYPE {p}_call_duration_seconds histogram",
        *_histogram(f"{p}_call_duration_seconds", stats.latency),
        f"# HELP {p}_queue_depth Calls waiting behind the running one.",
        f"# TYPE {p}_queue_depth gauge",
        f"{p}_queue_depth {status.queued}",
        f"# HELP {p}_in_flight Calls running (0 or 1).",
        f"# TYPE {p}_in_flight gauge",
        f"{p}_in_flight {status.in_flight}",
        f"# HELP {p}_idle_seconds Seconds since the last call started or ended (0 while one runs).",
        f"# TYPE {p}_idle_seconds gauge",
        f"{p}_idle_seconds {_number(status.idle_seconds)}",
        f"# HELP {p}_uptime_seconds Seconds since the worker started.",
        f"# TYPE {p}_uptime_seconds gauge",
        f"{p}_uptime_seconds {_number(status.uptime_seconds)}",
        f"# HELP {p}_state The worker's state (1 for the current one).",
        f"# TYPE {p}_state gauge",
        *(f'{p}_state{{state="{s}"}} {int(s is status.state)}' for s in State),
        f"# HELP {p}_held_seconds_total Seconds the worker (and each GPU it holds) was held: starting "
        "(until setup is done), busy (a call in flight), idle.",
        f"# TYPE {p}_held_seconds_total counter",
        *(f'{p}_held_seconds_total{{state="{k}"}} {_number(v)}' for k, v in status.held.items()),
        f"# HELP {p}_gpu_available Whether NVML telemetry is available.",
        f"# TYPE {p}_gpu_available gauge",
        f"{p}_gpu_available {int(gpu.available)}",
    ]
    for metric, help_text, attr in (
        ("gpu_utilization_percent", "GPU utilisation over the last sample period.", "utilization_percent"),
        ("gpu_memory_used_bytes", "GPU memory in use.", "memory_used_bytes"),
        ("gpu_memory_total_bytes", "GPU memory in total.", "memory_total_bytes"),
    ):
        lines += [f"# HELP {p}_{metric} {help_text}", f"# TYPE {p}_{metric} gauge"]
        for d in gpu.devices:
            value = getattr(d, attr)
            if value is not None:
                lines.append(f'{p}_{metric}{{gpu="{d.index}",uuid="{d.uuid}"}} {_number(value)}')
    if gpu.devices:
        lines += [
            f"# HELP {p}_gpu_seconds_total GPU-seconds each visible GPU was held, by state (starting, "
            "busy: a call in flight, idle).",
            f"# TYPE {p}_gpu_seconds_total counter",
        ]
        for d in gpu.devices:
            for state, seconds in status.held.items():
                lines.append(
                    f'{p}_gpu_seconds_total{{gpu="{d.index}",uuid="{d.uuid}",state="{state}"}} {_number(seconds)}'
                )
    return "\n".join(lines) + "\n"


def _histogram(name: str, h: Histogram) -> list[str]:
    out, cumulative = [], 0
    for bound, n in zip((*h.buckets, float("inf")), h.counts, strict=True):
        cumulative += n
        out.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
    return [*out, f"{name}_sum {_number(h.total)}", f"{name}_count {h.count}"]


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)
