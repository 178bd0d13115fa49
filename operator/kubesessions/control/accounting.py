"""What sessions cost and how they end: GPU-seconds busy and idle, outcomes, time to Ready.

The worker reports how long it has been held, split into starting (until the app's setup is
done), busy (a call in flight) and idle (``heldSeconds`` in its ``/status``); every GPU the
pod holds is held that long, so the
Session's GPU-seconds are those seconds times its GPUs. The controller hands each reading
here; the counters grow by what is new since the last reading, or, after an operator
restart, since what the Session's status last recorded (so a restart does not count a
session's whole past again). Labels are App and namespace, never the session: counters
stay few however many sessions come and go.

A warm pool worker's time before its claim (its setup and its wait: ``heldSeconds.pool``) is
its App's, not a Session's: read from the unclaimed workers by the pool's looks and, for the
last stretch before a claim, from the claimed worker's first reading; counted per pod, so
each second once. A pod first read by this operator counts at most the time this operator
has been running (its predecessor counted the rest).
"""

from __future__ import annotations

import datetime
import time
from collections import Counter, defaultdict
from collections.abc import Iterable

from kubesessions.api.models import FINISHED_PHASES, Phase, Suspension
from kubesessions.api.names import JSON
from kubesessions.common.metrics import Histogram
from kubesessions.common.timefmt import parse_rfc3339
from kubesessions.control.decide.suspend import SuspendOutcome

Key = tuple[str, str]  # (namespace, name)
STATES = ("starting", "busy", "idle")


def gpus_held(status: JSON) -> int:
    """Devices the pod holds: its whole GPUs, or one MIG slice."""
    gpus = status.get("gpus") or {}
    if gpus.get("migProfile"):
        return 1
    requested = gpus.get("requested")
    return requested if isinstance(requested, int) else 0


def gpu_seconds(worker: JSON, gpus: int) -> JSON | None:
    """The Session's ``status.gpuSeconds`` from a worker's ``/status``: None for a session
    without GPUs, or a worker that does not report ``heldSeconds``."""
    held = worker.get("heldSeconds")
    if gpus <= 0 or not isinstance(held, dict):
        return None
    if not all(isinstance(held.get(s), int | float) for s in STATES):
        return None
    seconds = {s: round(max(0.0, float(held[s])) * gpus, 3) for s in STATES}
    total = round(sum(seconds.values()), 3)
    return {
        "held": total,
        **seconds,
        "busyPercent": round(100 * seconds["busy"] / total) if total else 0,
    }


def pool_seconds(worker: JSON) -> float | None:
    """Seconds a worker spent in its warm pool before a claim (None: not reported)."""
    held = worker.get("heldSeconds")
    seconds = held.get("pool") if isinstance(held, dict) else None
    return max(0.0, float(seconds)) if isinstance(seconds, int | float) else None


def _summed(before: JSON, now: JSON) -> JSON:
    """Two gpuSeconds records of one session (before a suspend, and since its resume) as one."""
    seconds = {s: round(float(before.get(s) or 0.0) + float(now[s]), 3) for s in STATES}
    total = round(sum(seconds.values()), 3)
    return {"held": total, **seconds, "busyPercent": round(100 * seconds["busy"] / total) if total else 0}


class Accounting:
    def __init__(self, began: float | None = None) -> None:
        self.began = time.monotonic() if began is None else began  # when this operator began counting
        self.gpu_seconds: Counter[tuple[str, str, str]] = Counter()  # (state, app, namespace)
        self.pool_gpu_seconds: defaultdict[Key, float] = defaultdict(float)  # (namespace, app)
        self.pool_read: dict[Key, float] = {}  # (namespace, pod) -> its pool seconds counted so far
        self.ended: Counter[tuple[str, str]] = Counter()  # (phase, reason)
        self.ready_latency = Histogram()
        self.latest: dict[Key, JSON] = {}  # the newest status.gpuSeconds per session
        # A resumed session's GPU-seconds before its suspend: its new worker counts from zero.
        self.carried: dict[Key, JSON] = {}
        self.queued: dict[Key, int] = {}  # calls waiting in each worker, as last read
        self.suspends: Counter[str] = Counter()  # by result: saved, busy, underway, failed
        self.resumes: Counter[str] = Counter()  # by result: resumed, failed
        self.suspend_seconds, self.resume_seconds = Histogram(), Histogram()
        self.state_bytes_total = 0
        # GPU-seconds suspended sessions did not hold: their GPUs times the time suspended.
        self.not_spent_gpu_seconds = 0.0

    def observe(self, key: Key, body: JSON, worker: JSON, pod: str | None = None) -> None:
        """One reading of the session's worker (its ``GET /status`` body); ``pod``: the worker
        pod's name when it is not the Session's (a claimed pool worker)."""
        status = body.get("status") or {}
        queued = worker.get("queued")
        self.queued[key] = queued if isinstance(queued, int) else 0
        app = (body.get("spec") or {}).get("app") or ""
        self.observe_pool(key[0], app, pod or key[1], worker, gpus_held(status))
        reading = gpu_seconds(worker, gpus_held(status))
        if reading is None:
            return
        if key in self.carried:
            reading = _summed(self.carried[key], reading)
        before = self.latest.get(key) or status.get("gpuSeconds") or {}
        for state in STATES:
            grown = reading[state] - float(before.get(state) or 0.0)
            if grown > 0:
                self.gpu_seconds[(state, app, key[0])] += grown
        self.latest[key] = reading

    def observe_pool(self, namespace: str, app: str, pod: str, worker: JSON, gpus: int) -> None:
        """A reading of a worker's pool time (an unclaimed one's, growing; a claimed one's, final)."""
        seconds = pool_seconds(worker)
        if not seconds or gpus <= 0 or not app:  # a Session's own worker reports no pool time
            return
        key = (namespace, pod)
        if key not in self.pool_read:  # first read here: what came before this operator is not ours
            self.pool_read[key] = max(0.0, seconds - (time.monotonic() - self.began))
        grown = seconds - self.pool_read[key]
        if grown > 0:
            self.pool_gpu_seconds[(namespace, app)] += grown * gpus
            self.pool_read[key] = seconds

    def forget_pod(self, namespace: str, pod: str) -> None:
        self.pool_read.pop((namespace, pod), None)

    def status_fields(self, key: Key) -> JSON:
        """``{"gpuSeconds": ...}`` to ride along with a status write, or nothing yet."""
        reading = self.latest.get(key)
        return {"gpuSeconds": reading} if reading is not None else {}

    def transition(self, body: JSON, before: str | None, after: JSON) -> None:
        """A status write that changed the phase: count endings, time create → Ready."""
        phase = after.get("phase")
        if phase == before:
            return
        if phase in FINISHED_PHASES:
            self.ended[(str(phase), str(after.get("reason") or ""))] += 1
        elif phase == Phase.READY:
            created = parse_rfc3339(body["metadata"].get("creationTimestamp"))
            ready = parse_rfc3339(after.get("readyAt"))
            if created is not None and ready is not None:
                # creationTimestamp has whole seconds: up to 1 s more than the true latency.
                self.ready_latency.observe(max(0.0, (ready - created).total_seconds()))

    def suspended(self, outcome: SuspendOutcome, seconds: float) -> None:
        """A `/suspend` answered (or failed to)."""
        self.suspends[outcome.result] += 1
        if outcome.saved is not None:
            self.suspend_seconds.observe(seconds)
            self.state_bytes_total += int(outcome.saved.get("bytes") or 0)

    def resumed(self, ok: bool, seconds: float) -> None:
        self.resumes["resumed" if ok else "failed"] += 1
        if ok:
            self.resume_seconds.observe(seconds)

    def not_spent(self, key: Key, body: JSON, saved: Suspension, now: datetime.datetime) -> None:
        """A suspended session wakes: the GPU-seconds it did not hold while suspended; those it
        held before go on in its status (its new worker counts from zero)."""
        held = (body.get("status") or {}).get("gpuSeconds")
        if isinstance(held, dict):
            self.carried[key] = held
            self.latest[key] = held
        since = parse_rfc3339(saved.suspendedAt)
        if since is not None:
            gpus = gpus_held(body.get("status") or {})
            self.not_spent_gpu_seconds += max(0.0, (now - since).total_seconds()) * gpus

    def forget(self, key: Key) -> None:
        self.latest.pop(key, None)
        self.carried.pop(key, None)
        self.queued.pop(key, None)

    def render(self) -> list[str]:
        lines = [
            "# HELP kubesessions_gpu_seconds_total GPU-seconds held by sessions, starting (until setup "
            "is done), busy (a call in flight) or idle, by App and namespace.",
            "# TYPE kubesessions_gpu_seconds_total counter",
        ]
        for (state, app, namespace), seconds in sorted(self.gpu_seconds.items()):
            lines.append(
                f'kubesessions_gpu_seconds_total{{state="{state}",app="{app}",namespace="{namespace}"}} '
                f"{round(seconds, 3)}"
            )
        lines += [
            "# HELP kubesessions_pool_gpu_seconds_total GPU-seconds held by warm pool workers before a "
            "claim (their setup and their wait), by App and namespace.",
            "# TYPE kubesessions_pool_gpu_seconds_total counter",
            *(
                f'kubesessions_pool_gpu_seconds_total{{namespace="{namespace}",app="{app}"}} {round(seconds, 3)}'
                for (namespace, app), seconds in sorted(self.pool_gpu_seconds.items())
            ),
            "# HELP kubesessions_sessions_ended_total Sessions that finished, by phase and reason.",
            "# TYPE kubesessions_sessions_ended_total counter",
        ]
        for (phase, reason), count in sorted(self.ended.items()):
            lines.append(f'kubesessions_sessions_ended_total{{phase="{phase}",reason="{reason}"}} {count}')
        lines += [
            "# HELP kubesessions_session_ready_seconds Time from a Session's creation to Ready.",
            "# TYPE kubesessions_session_ready_seconds histogram",
            *self.ready_latency.render("kubesessions_session_ready_seconds", ""),
            "# HELP kubesessions_suspends_total Suspends of idle sessions by result (saved; busy: a call "
            "came first; failed: the session ended or, by hand, went on).",
            "# TYPE kubesessions_suspends_total counter",
            *(
                f'kubesessions_suspends_total{{result="{r}"}} {self.suspends[r]}'
                for r in ("saved", "busy", "failed")
            ),
            "# HELP kubesessions_resumes_total Resumes of suspended sessions by result.",
            "# TYPE kubesessions_resumes_total counter",
            *(f'kubesessions_resumes_total{{result="{r}"}} {self.resumes[r]}' for r in ("resumed", "failed")),
            "# HELP kubesessions_suspend_seconds Time the worker took to save a session's state (app and upload).",
            "# TYPE kubesessions_suspend_seconds histogram",
            *self.suspend_seconds.render("kubesessions_suspend_seconds", ""),
            "# HELP kubesessions_resume_seconds Time the worker took to restore a session's state.",
            "# TYPE kubesessions_resume_seconds histogram",
            *self.resume_seconds.render("kubesessions_resume_seconds", ""),
            "# HELP kubesessions_state_bytes_total Bytes of state saved by suspends.",
            "# TYPE kubesessions_state_bytes_total counter",
            f"kubesessions_state_bytes_total {self.state_bytes_total}",
            "# HELP kubesessions_gpu_seconds_not_spent_total GPU-seconds suspended sessions did not hold "
            "(their GPUs times the time they were suspended, counted when they wake).",
            "# TYPE kubesessions_gpu_seconds_not_spent_total counter",
            f"kubesessions_gpu_seconds_not_spent_total {round(self.not_spent_gpu_seconds, 3)}",
            "# HELP kubesessions_queued_calls Calls waiting in the workers' queues, as last read.",
            "# TYPE kubesessions_queued_calls gauge",
            f"kubesessions_queued_calls {sum(self.queued.values())}",
        ]
        return lines


UNREADY = (Phase.PENDING, Phase.STARTING)


def session_gauges(sessions: Iterable[JSON], unreachable: int, now: datetime.datetime) -> list[str]:
    """Sessions by phase, the oldest not yet Ready, workers not answering: from the cache."""
    phases: Counter[str] = Counter()
    oldest: dict[str, float] = dict.fromkeys(UNREADY, 0.0)
    for body in sessions:
        phase = (body.get("status") or {}).get("phase") or Phase.PENDING
        phases[phase] += 1
        created = parse_rfc3339(body["metadata"].get("creationTimestamp"))
        if phase in oldest and created is not None:
            oldest[phase] = max(oldest[phase], (now - created).total_seconds())
    return [
        "# HELP kubesessions_sessions Sessions by phase (tombstones of finished ones included).",
        "# TYPE kubesessions_sessions gauge",
        *(f'kubesessions_sessions{{phase="{p.value}"}} {phases[p]}' for p in Phase),
        "# HELP kubesessions_sessions_oldest_age_seconds Age of the oldest Session in the phase (0: none).",
        "# TYPE kubesessions_sessions_oldest_age_seconds gauge",
        *(
            f'kubesessions_sessions_oldest_age_seconds{{phase="{p.value}"}} {round(oldest[p], 3)}'
            for p in UNREADY
        ),
        "# HELP kubesessions_workers_unreachable Ready sessions whose worker missed its last status call.",
        "# TYPE kubesessions_workers_unreachable gauge",
        f"kubesessions_workers_unreachable {unreachable}",
    ]
