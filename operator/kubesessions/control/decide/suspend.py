"""Pure: suspend and resume. Whether an idle session suspends or ends, what a suspended one
needs next (expire, resume, a keepalive that moves its expiry, or nothing until a time), what
the worker's answers to `/suspend` and `/resume` mean, and the status a suspended session has.

The controller acts on these (:mod:`kubesessions.control.act.worker` calls the worker,
:mod:`kubesessions.control.act.status` writes the status)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from enum import StrEnum

from kubesessions.api import names
from kubesessions.api.models import AppSuspend, Phase, SessionStatus, Suspension
from kubesessions.api.names import JSON, KEEPALIVE_ANNOTATION, RESUME_REQUESTED
from kubesessions.common.timefmt import parse_rfc3339, rfc3339
from kubesessions.control.decide.status import Verdict

# After a BUSY answer (a call came in first) the next try waits at least this long.
BUSY_RETRY = 1.0
# A suspend that an operator before this one asked for is still under way: look again this
# soon (the worker's exit, a pod event, most likely comes first and records it).
UNDERWAY_LOOK = 1.0
# What a suspended session's status no longer has: its worker's facts and its idle clock (a
# resume starts them again, a pool claim's hand-over too).
WORKER_FACTS = ("podIP", "startedAt", "readyAt", "startedFrom", "claimedAt", "idleSince")
OFF = "suspend is off"
NO_STORE = "no state store is configured (the Secret kube-sessions-state-store)"
NO_METHODS = "the app defines no suspend(dir) and resume(dir)"


def unavailable(suspend: AppSuspend | None, store: bool, suspendable: bool | None) -> str | None:
    """Why an idle session cannot suspend (None: it can). ``suspend``: the settings in force
    (None: off); ``store``: a state store is configured; ``suspendable``: what the worker's
    `/status` said (None: unknown, it is asked)."""
    if suspend is None:
        return OFF
    if not store:
        return NO_STORE
    if suspendable is False:
        return NO_METHODS
    return None


class Next(StrEnum):
    """What a Suspended session needs now."""

    WAIT = "wait"  # nothing until ``again_in``
    EXPIRE = "expire"  # its keep time passed: delete the state, end it
    RESUME = "resume"  # asked to wake
    EXTEND = "extend"  # a keepalive moved its expiry to ``expires_at``


@dataclass(frozen=True)
class SuspendedStep:
    next: Next
    again_in: float | None = None
    expires_at: str | None = None


def suspended_step(
    now: datetime.datetime, suspension: Suspension, annotations: dict[str, str], keep_seconds: int
) -> SuspendedStep:
    """A Suspended session's next step. A keepalive (its annotation's time) moves the expiry to
    keep_seconds after it, without waking the session; one at or before the expiry in force
    changes nothing (so it is written once)."""
    expires = parse_rfc3339(suspension.expiresAt)
    keepalive = parse_rfc3339(annotations.get(KEEPALIVE_ANNOTATION))
    if keepalive is not None and keepalive <= now:
        moved = keepalive + datetime.timedelta(seconds=keep_seconds)
        if expires is None or moved > expires:
            return SuspendedStep(Next.EXTEND, expires_at=rfc3339(moved))
    if expires is not None and now >= expires:
        return SuspendedStep(Next.EXPIRE)
    if RESUME_REQUESTED in annotations:
        return SuspendedStep(Next.RESUME)
    return SuspendedStep(Next.WAIT, again_in=None if expires is None else (expires - now).total_seconds())


def suspension(answer: JSON, key: str, now: datetime.datetime, keep_seconds: int) -> Suspension:
    """The status record of a state the worker saved (its 200 answer to `/suspend`)."""
    return Suspension(
        suspendedAt=rfc3339(now),
        expiresAt=rfc3339(now + datetime.timedelta(seconds=keep_seconds)),
        bytes=int(answer["bytes"]),
        sha256=str(answer["sha256"]),
        seconds=float(answer.get("seconds") or 0.0),
        key=key,
    )


def suspended_fields(saved: Suspension) -> SessionStatus:
    """Status fields written with phase Suspended: the saved state, the session's expiry (its
    keep time's end), and none of its stopped worker's facts."""
    facts = SessionStatus(suspension=saved, expiresAt=saved.expiresAt)
    for name in WORKER_FACTS:
        setattr(facts, name, None)
    return facts


def suspended_from_exit(message: str | None) -> JSON | None:
    """The worker's answer to `/suspend` as its termination message kept it (reason Suspended):
    what an operator that lost the answer (it restarted mid-suspend) records instead."""
    try:
        said = json.loads(message or "")
        if not isinstance(said, dict) or said.get("reason") != "Suspended":
            return None
        answer = json.loads(str(said.get("message") or ""))
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    if not isinstance(answer.get("bytes"), int) or not isinstance(answer.get("sha256"), str):
        return None
    return answer


@dataclass(frozen=True)
class SuspendOutcome:
    """What a `/suspend` answer means: ``saved`` (the answer), ``again_in`` (a call came first:
    try later; ``underway``: a suspend asked for by an operator before this one is still
    running, its exit says how it ended), or ``failed`` (the reason: the session ends idle, or
    goes on if asked by hand)."""

    saved: JSON | None = None
    again_in: float | None = None
    underway: bool = False
    failed: str | None = None

    @property
    def result(self) -> str:
        """Its name in the suspends metric: saved, underway, busy or failed."""
        if self.saved is not None:
            return "saved"
        if self.underway:
            return "underway"
        return "busy" if self.again_in is not None else "failed"


def suspend_outcome(code: int, answer: JSON, *, again: bool = False) -> SuspendOutcome:
    """``code`` 0: the worker could not be reached. ``again``: asked again by an operator that
    restarted mid-suspend; then an unreachable worker most likely exited with that suspend done
    (a pod event soon says how it ended), so it is waited for, not failed."""
    if again and code == 0:
        return SuspendOutcome(again_in=UNDERWAY_LOOK, underway=True)
    if code == 200 and isinstance(answer.get("bytes"), int) and isinstance(answer.get("sha256"), str):
        return SuspendOutcome(saved=answer)
    problem = str(answer.get("code") or f"HTTP {code}")
    if problem == names.BUSY:
        return SuspendOutcome(again_in=BUSY_RETRY)
    if problem == names.SUSPENDING:
        return SuspendOutcome(again_in=UNDERWAY_LOOK, underway=True)
    return SuspendOutcome(failed=f"{problem}: {answer.get('detail') or 'no detail'}")


def idle_end(why_not: str, timeout: int) -> Verdict:
    """An idle session that could not suspend ends as an idle expiry does, saying why."""
    return Verdict(
        Phase.EXPIRED, "IdleTimeout", f"no call for {timeout}s (idle timeout); not suspended: {why_not}"
    )


def resume_outcome(code: int, answer: JSON) -> Verdict | None:
    """None: resumed (a worker that refuses because it resumed already, after an operator
    restart mid-resume, counts); else the Failed verdict naming the app's or the store's error."""
    if code == 200 or answer.get("code") == names.RESUME_REFUSED:
        return None
    problem = str(answer.get("code") or f"HTTP {code}")
    return Verdict(Phase.FAILED, "ResumeFailed", f"{problem}: {answer.get('detail') or 'no detail'}")


def expired(suspension: Suspension, keep_seconds: int) -> Verdict:
    return Verdict(
        Phase.EXPIRED,
        "SuspendExpired",
        f"suspended since {suspension.suspendedAt} and not resumed within {keep_seconds}s: its state is deleted",
    )


RESUMING = "a worker starts (or is claimed from the pool) and restores the saved state"
# Start-up steps of a resuming worker that say nothing new: they keep the one Resuming status
# (no write each); a problem (Unschedulable, an image error) shows.
ROUTINE = frozenset({"Creating", "WorkerStarting", "WorkerReady", "Resuming"})


def resuming(verdict: Verdict) -> Verdict:
    """A resuming session's status while its worker starts (before the state is handed back)."""
    if verdict.reason in ROUTINE:
        return Verdict(Phase.RESUMING, "Resuming", RESUMING)
    return Verdict(Phase.RESUMING, verdict.reason, verdict.message)


SUSPEND_AVAILABLE = "SuspendAvailable"  # the App's condition


def app_condition(enabled: bool, store: bool, suspendable: bool | None) -> tuple[bool, str, str] | None:
    """An App's SuspendAvailable condition as (status, reason, message); None when its
    spec.suspend is off. ``suspendable``: what its workers' `/status` said (None: none seen yet)."""
    if not enabled:
        return None
    if not store:
        return False, "NoStateStore", f"idle sessions end instead: {NO_STORE}"
    if suspendable is False:
        return False, "AppNotSuspendable", f"idle sessions end instead: {NO_METHODS}"
    if suspendable is None:
        return True, "StoreConfigured", "a state store is configured; no worker of this App seen yet"
    return True, "Suspendable", "idle sessions are suspended to the state store"
