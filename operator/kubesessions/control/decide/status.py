"""Pure: a Session's status from its worker pod, and the status patch to write."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Literal

from kubesessions.api.models import DEFAULT_SETUP_TIMEOUT, FINISHED_PHASES, Condition, Phase, SessionStatus
from kubesessions.api.names import JSON, SETUP_TIMEOUT_ANNOTATION, WORKER_CONTAINER
from kubesessions.common.timefmt import parse_rfc3339, rfc3339

# Waiting reasons after which an image will not start without a change to the spec.
IMAGE_ERRORS = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons worth showing while a worker starts (they may still clear up).
STARTUP_PROBLEMS = frozenset(
    {"ErrImagePull", "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff"}
)
# Status fields that only describe the pod: see status_patch.
POD_FACTS = frozenset({"podIP", "startedAt"})
# How long a new pod may wait for the scheduler before "Creating" is worth a write.
CREATING_SETTLE = 1.0
# Termination messages the worker writes (docs/worker-contract.md) -> (phase, reason).
WORKER_ENDINGS = {
    "SetupFailed": (Phase.FAILED, "SetupFailed"),
    "Closed": (Phase.CLOSED, "Closed"),
    "ClosedByApp": (Phase.CLOSED, "ClosedByApp"),
    "IdleTimeout": (Phase.EXPIRED, "IdleTimeout"),
    # The app's code did not return within the call timeout plus a grace: the worker gave up
    # the session (and its GPU) rather than hold it for a call that may never end.
    "CallTimeout": (Phase.FAILED, "CallTimeout"),
}


@dataclass(frozen=True)
class Verdict:
    """Where the session stands, as read from its pod."""

    phase: Phase
    reason: str
    message: str
    ready: bool = False


def _pod_condition(pod: JSON, kind: str) -> JSON | None:
    return next((c for c in pod.get("status", {}).get("conditions") or [] if c.get("type") == kind), None)


def _worker_status(pod: JSON) -> JSON | None:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == WORKER_CONTAINER), statuses[0] if statuses else None)


# How much of a dead worker's last words (its termination message, or with
# FallbackToLogsOnError the kubelet's copy of its last log lines) the Session's message keeps.
LAST_LINES, LAST_CHARS = 10, 800


def _worker_spec(pod: JSON) -> JSON:
    containers = pod.get("spec", {}).get("containers") or [{}]
    return next((c for c in containers if c.get("name") == WORKER_CONTAINER), containers[0])


def _last_lines(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-LAST_LINES:])[-LAST_CHARS:]


def _how_it_ended(terminated: JSON) -> str:
    code = terminated.get("exitCode", 0)
    signal = terminated.get("signal") or (code - 128 if 128 < code < 160 else None)
    how = f"the worker exited with code {code}"
    if signal:
        how += f" (killed by signal {signal}{', SIGKILL' if signal == 9 else ''})"
    kubelet = terminated.get("reason")
    return f"{how}, reason {kubelet}" if kubelet and kubelet not in ("Error", "Completed") else how


def _ending(terminated: JSON, pod: JSON) -> tuple[Phase, str, str]:
    """What a worker's exit means: out of memory (the kubelet says so), else its termination
    message (JSON per the contract), else how it died with its last lines."""
    if terminated.get("reason") == "OOMKilled":
        limit = ((_worker_spec(pod).get("resources") or {}).get("limits") or {}).get("memory")
        what = f"more than its memory limit of {limit}" if limit else "more memory than its node had left"
        return (
            Phase.FAILED,
            "OutOfMemory",
            f"the worker used {what} and was killed (OOMKilled): raise resources.memory "
            "(the App's, or the Session's template where the App allows it) or make the app use less",
        )
    raw = terminated.get("message") or ""
    try:
        said = json.loads(raw)
    except ValueError:
        said = None
    if isinstance(said, dict) and said.get("reason") in WORKER_ENDINGS:
        phase, reason = WORKER_ENDINGS[said["reason"]]
        return phase, reason, str(said.get("message") or said["reason"])
    last = _last_lines(raw)
    detail = f": {last}" if last else ""
    return Phase.FAILED, "WorkerLost", f"{_how_it_ended(terminated)}{detail}"


def exit_message(pod: JSON | None) -> str | None:
    """The worker's termination message, once it has exited (None before, or without one)."""
    state = ((_worker_status(pod) or {}).get("state") or {}) if pod is not None else {}
    message = (state.get("terminated") or {}).get("message")
    return str(message) if message else None


def judge(pod: JSON | None, previous_phase: str | None) -> Verdict:
    """Read the pod. ``pod`` None means there is none (yet, or any more)."""
    if pod is None or pod.get("metadata", {}).get("deletionTimestamp"):
        if previous_phase in (Phase.STARTING, Phase.READY, Phase.SUSPENDING):
            return Verdict(Phase.FAILED, "WorkerLost", "the worker pod disappeared")
        return Verdict(Phase.PENDING, "Creating", "creating the worker pod")
    status = pod.get("status", {})
    worker = _worker_status(pod) or {}
    state = worker.get("state") or {}
    if status.get("phase") == "Failed" and status.get("reason") == "Evicted":
        # Over its ephemeral-storage, an emptyDir's sizeLimit or the scratch size: the kubelet says which.
        return Verdict(Phase.FAILED, "Evicted", status.get("message") or "the kubelet evicted the worker")
    if "terminated" in state:
        phase, reason, message = _ending(state["terminated"], pod)
        return Verdict(phase, reason, message)
    waiting = state.get("waiting") or {}
    if status.get("phase") == "Failed":
        if status.get("reason") == "ErrImagePull" or waiting.get("reason") in ("ErrImagePull", *IMAGE_ERRORS):
            return Verdict(Phase.FAILED, "ImageError", status.get("message") or waiting.get("message", ""))
        return Verdict(Phase.FAILED, "WorkerLost", status.get("message") or "the worker pod failed")
    if status.get("phase") == "Succeeded":
        return Verdict(Phase.FAILED, "WorkerLost", "the worker exited")
    if waiting.get("reason") in IMAGE_ERRORS:
        return Verdict(
            Phase.FAILED, "ImageError", f"{waiting['reason']}: {waiting.get('message', '')}".strip()
        )
    scheduled = _pod_condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return Verdict(Phase.PENDING, "Unschedulable", scheduled.get("message", ""))
    if not pod.get("spec", {}).get("nodeName"):
        return Verdict(Phase.PENDING, "Creating", "creating the worker pod")
    ready = _pod_condition(pod, "Ready")
    if ready and ready.get("status") == "True":
        return Verdict(Phase.READY, "WorkerReady", "the worker is ready for calls", ready=True)
    if previous_phase == Phase.READY:
        return Verdict(Phase.READY, "WorkerNotReady", "the worker stopped answering its readiness probe")
    # Routine start-up steps share one reason, so they cost no status writes; problems show.
    if waiting.get("reason") in STARTUP_PROBLEMS:
        return Verdict(Phase.STARTING, waiting["reason"], waiting.get("message", ""))
    return Verdict(Phase.STARTING, "WorkerStarting", "the worker is starting and running the app's setup")


def setup_overdue(
    pod: JSON | None, verdict: Verdict, now: datetime.datetime
) -> tuple[Verdict | None, float | None]:
    """A starting worker past its setup timeout (the pod's annotation, counted from its
    container's start: image pulls and scheduling have reasons of their own): (the verdict
    SetupTimeout, or None; seconds until it would be due, None if no clock runs)."""
    if pod is None or verdict.phase != Phase.STARTING:
        return None, None
    running = ((_worker_status(pod) or {}).get("state") or {}).get("running") or {}
    started = parse_rfc3339(running.get("startedAt"))
    if started is None:
        return None, None
    annotation = (pod["metadata"].get("annotations") or {}).get(SETUP_TIMEOUT_ANNOTATION)
    limit = int(annotation) if annotation and annotation.isdigit() else DEFAULT_SETUP_TIMEOUT
    left = limit - (now - started).total_seconds()
    if left > 0:
        return None, left
    message = (
        f"the worker was not ready {limit}s after it started: the app's setup took too long "
        f"(last seen: {verdict.message or verdict.reason}); raise setupTimeout on the App if its "
        "setup needs longer"
    )
    return Verdict(Phase.FAILED, "SetupTimeout", message), None


def _condition(
    previous: list[Condition], kind: str, ok: bool, reason: str, message: str, generation: int, now: str
) -> Condition:
    status: Literal["True", "False"] = "True" if ok else "False"
    old = next((c for c in previous if c.type == kind), None)
    since = old.lastTransitionTime if old is not None and old.status == status else None
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=since or now,
        observedGeneration=generation,
    )


def desired_status(
    current: SessionStatus,
    verdict: Verdict,
    *,
    pod: JSON | None,
    generation: int,
    now: str,
    facts: SessionStatus | None = None,
) -> SessionStatus:
    """The whole status the operator wants, keeping what only accrues (readyAt, endedAt).
    ``facts``: fields known from the start (timeout, GPUs, endpoint), set on top of ``current``."""
    phase = verdict.phase
    conditions = current.conditions
    on_node = bool(pod and pod.get("spec", {}).get("nodeName"))
    scheduled = (
        next((c for c in conditions if c.type == "Scheduled"), None)
        if phase in FINISHED_PHASES and pod is None
        else _condition(
            conditions,
            "Scheduled",
            on_node,
            "Scheduled" if on_node else verdict.reason,
            "" if on_node else verdict.message,
            generation,
            now,
        )
    )
    ready = _condition(conditions, "Ready", verdict.ready, verdict.reason, verdict.message, generation, now)
    update: dict[str, Any] = {name: getattr(facts, name) for name in facts.model_fields_set} if facts else {}
    update |= {
        "phase": phase,
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": generation,
        "conditions": [c for c in (ready, scheduled) if c is not None],
    }
    if pod is not None:
        pod_status = pod.get("status", {})
        update["podName"] = pod["metadata"]["name"]
        if pod_status.get("podIP"):
            update["podIP"] = pod_status["podIP"]
        if pod_status.get("startTime") and not current.startedAt:
            update["startedAt"] = pod_status["startTime"]
    if verdict.ready and not current.readyAt:
        # Ready is where idleness starts counting: recorded with it, it costs no extra write.
        update["readyAt"] = update["lastActivityTime"] = update["idleSince"] = now
        timeout = update.get("sessionTimeout", current.sessionTimeout)
        parsed = parse_rfc3339(now)
        if timeout is not None and parsed is not None:
            update["expiresAt"] = rfc3339(parsed + datetime.timedelta(seconds=timeout))
    if phase in FINISHED_PHASES:
        # An ended session's clocks stop: it expires no later than it ended, and it has no
        # idle time that goes on counting.
        ended = update["endedAt"] = current.endedAt or now
        expires = update.get("expiresAt", current.expiresAt)
        if expires is not None and _instant(expires) > _instant(ended):
            update["expiresAt"] = ended
        update["idleSince"] = None
    return current.model_copy(update=update)


def _instant(text: str) -> datetime.datetime:
    parsed = parse_rfc3339(text)
    assert parsed is not None  # callers pass set fields only
    return parsed


def finished(phase: str | None) -> bool:
    return phase in FINISHED_PHASES


def status_patch(current: SessionStatus, desired: SessionStatus) -> JSON:
    """The fields of ``desired`` that differ from ``current`` (empty: nothing to write).

    Pod facts alone (podIP, startedAt) are not worth a write: they ride along with the next
    change of phase or reason (Ready, at the latest), which is all anyone acts on.
    """
    was, want = as_json(current), as_json(desired)
    patch = {k: v for k, v in want.items() if was.get(k) != v}
    patch |= {k: None for k in was.keys() - want.keys()}  # null removes it (merge patch)
    return {} if set(patch) <= POD_FACTS else patch


def as_json(status: SessionStatus) -> JSON:
    """The status as the API stores it (unset fields left out)."""
    return status.model_dump(mode="json", exclude_none=True)


def creating_settle(verdict: Verdict, previous_phase: str | None, pod_age: float | None) -> float:
    """Seconds to hold back a Session's first status while its new pod waits for the
    scheduler (0: write now). Placing a pod takes milliseconds, so a "Creating" written
    at once would be overwritten by "Starting" a moment later: one write where two would do.
    ``pod_age`` is None when this operator did not create the pod just now."""
    if verdict.reason != "Creating" or previous_phase or pod_age is None:
        return 0.0
    return max(0.0, CREATING_SETTLE - pod_age)


def current_status(body: JSON) -> SessionStatus:
    return SessionStatus.model_validate(body.get("status") or {})
