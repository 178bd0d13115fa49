from __future__ import annotations

import datetime
import json

import pytest

from kubesessions.api import names
from kubesessions.api.models import AppSuspend, Phase, SessionStatus, StartedFrom, Suspension
from kubesessions.common.timefmt import rfc3339
from kubesessions.control.decide import suspend
from kubesessions.control.decide.status import Verdict, as_json, desired_status, status_patch

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 12, 7, 12, 0, 0, tzinfo=datetime.UTC)
SAVED = Suspension(
    suspendedAt=rfc3339(NOW - datetime.timedelta(seconds=100)),
    expiresAt=rfc3339(NOW + datetime.timedelta(seconds=500)),
    bytes=10,
    sha256="a" * 64,
    seconds=0.1,
    key="sessions/ns/s/uid/state.tar",
)


def at(seconds: float) -> str:
    return rfc3339(NOW + datetime.timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("settings", "store", "suspendable", "why"),
    [
        (None, True, True, "suspend is off"),
        (AppSuspend(enabled=True), False, True, "no state store"),
        (AppSuspend(enabled=True), True, False, "no suspend(dir)"),
        (AppSuspend(enabled=True), True, None, None),  # not known yet: the worker is asked
        (AppSuspend(enabled=True), True, True, None),
    ],
)
def test_an_idle_session_suspends_only_when_on_stored_and_suspendable(
    settings: AppSuspend | None, store: bool, suspendable: bool | None, why: str | None
) -> None:
    got = suspend.unavailable(settings, store, suspendable)
    assert got == why if why is None else why in (got or "")


def test_a_suspended_session_waits_until_its_expiry_then_expires() -> None:
    step = suspend.suspended_step(NOW, SAVED, {}, 600)
    assert step.next == suspend.Next.WAIT and step.again_in == pytest.approx(500)
    assert (
        suspend.suspended_step(NOW + datetime.timedelta(seconds=500), SAVED, {}, 600).next
        == suspend.Next.EXPIRE
    )


def test_resume_requested_wakes_it_unless_it_has_expired() -> None:
    asked = {names.RESUME_REQUESTED: at(-1)}
    assert suspend.suspended_step(NOW, SAVED, asked, 600).next == suspend.Next.RESUME
    late = NOW + datetime.timedelta(seconds=501)
    assert suspend.suspended_step(late, SAVED, asked, 600).next == suspend.Next.EXPIRE


def test_a_keepalive_moves_the_expiry_once_without_waking_it() -> None:
    kept = {names.KEEPALIVE_ANNOTATION: at(-10)}
    step = suspend.suspended_step(NOW, SAVED, kept, 600)
    assert step.next == suspend.Next.EXTEND and step.expires_at == at(590)
    moved = SAVED.model_copy(update={"expiresAt": step.expires_at})
    # Recorded: the same keepalive changes nothing any more (one write per keepalive).
    assert suspend.suspended_step(NOW, moved, kept, 600).next == suspend.Next.WAIT
    # A keepalive older than the expiry in force does not shorten it.
    old = {names.KEEPALIVE_ANNOTATION: at(-200)}
    assert suspend.suspended_step(NOW, SAVED, old, 600).next == suspend.Next.WAIT
    # Nor does one from the future (a skewed clock) stretch it.
    assert (
        suspend.suspended_step(NOW, SAVED, {names.KEEPALIVE_ANNOTATION: at(3600)}, 600).next
        == suspend.Next.WAIT
    )


@pytest.mark.parametrize(
    ("code", "answer", "saved", "again", "failed"),
    [
        (200, {"bytes": 5, "sha256": "b" * 64, "seconds": 0.2}, True, None, None),
        (409, {"code": names.BUSY, "detail": "a call is running"}, False, suspend.BUSY_RETRY, None),
        # Asked again after an operator restart, while the first suspend runs: its exit tells.
        (409, {"code": names.SUSPENDING, "detail": "under way"}, False, suspend.UNDERWAY_LOOK, None),
        (
            409,
            {"code": names.NOT_SUSPENDABLE, "detail": "no methods"},
            False,
            None,
            "NOT_SUSPENDABLE: no methods",
        ),
        (413, {"code": names.STATE_TOO_LARGE, "detail": "2 > 1"}, False, None, "STATE_TOO_LARGE: 2 > 1"),
        (500, {"code": names.SUSPEND_FAILED, "detail": "boom"}, False, None, "SUSPEND_FAILED: boom"),
        (200, {"bytes": "5"}, False, None, "HTTP 200: no detail"),  # a malformed answer is no state
    ],
)
def test_suspend_answers(
    code: int, answer: dict[str, object], saved: bool, again: float | None, failed: str | None
) -> None:
    outcome = suspend.suspend_outcome(code, answer)
    assert (outcome.saved is not None, outcome.again_in, outcome.failed) == (saved, again, failed)
    assert outcome.underway == (answer.get("code") == names.SUSPENDING)


def test_each_suspend_outcome_has_its_name_in_the_metric() -> None:
    assert suspend.SuspendOutcome(saved={"bytes": 1, "sha256": "x"}).result == "saved"
    assert suspend.SuspendOutcome(again_in=suspend.UNDERWAY_LOOK, underway=True).result == "underway"
    assert suspend.SuspendOutcome(again_in=suspend.BUSY_RETRY).result == "busy"
    assert suspend.SuspendOutcome(failed="SUSPEND_FAILED: boom").result == "failed"


def test_a_worker_unreachable_when_asked_again_after_a_restart_is_waited_for() -> None:
    """Asked again mid-suspend by a new operator, a worker that cannot be reached has most
    likely just exited with the suspend done: its exit tells, so it is no failure."""
    unreachable = {"code": "WORKER_UNREACHABLE", "detail": "Connect call failed"}
    assert suspend.suspend_outcome(0, unreachable).failed == "WORKER_UNREACHABLE: Connect call failed"
    waited = suspend.suspend_outcome(0, unreachable, again=True)
    assert (waited.underway, waited.again_in, waited.failed) == (True, suspend.UNDERWAY_LOOK, None)


def test_resume_answers() -> None:
    assert suspend.resume_outcome(200, {"seconds": 0.1}) is None
    assert suspend.resume_outcome(409, {"code": names.RESUME_REFUSED}) is None  # resumed before a restart
    failed = suspend.resume_outcome(422, {"code": names.STATE_CORRUPT, "detail": "sha256 differs"})
    assert failed == Verdict(Phase.FAILED, "ResumeFailed", "STATE_CORRUPT: sha256 differs")


def test_the_suspended_status_drops_the_workers_facts_and_keeps_the_state() -> None:
    running = SessionStatus(
        phase=Phase.READY,
        podIP="10.0.0.1",
        readyAt=at(-300),
        startedAt=at(-301),
        startedFrom=StartedFrom.POOL,
        claimedAt=at(-301),
        idleSince=at(-200),
        lastActivityTime=at(-200),
        expiresAt=at(-100),
        sessionTimeout=100,
    )
    saved = suspend.suspension({"bytes": 7, "sha256": "c" * 64, "seconds": 0.5}, "k", NOW, 600)
    assert saved.expiresAt == at(600)
    verdict = Verdict(Phase.SUSPENDED, "IdleTimeout", "suspended")
    desired = desired_status(
        running, verdict, pod=None, generation=1, now=rfc3339(NOW), facts=suspend.suspended_fields(saved)
    )
    patch = status_patch(running, desired)
    assert {name: patch[name] for name in suspend.WORKER_FACTS} == dict.fromkeys(suspend.WORKER_FACTS)
    assert patch["suspension"] == as_json(SessionStatus(suspension=saved))["suspension"]
    assert patch["expiresAt"] == at(600) and patch["phase"] == "Suspended"
    assert "endedAt" not in patch  # not an end


def test_an_answer_lost_to_a_restart_is_read_from_the_workers_exit() -> None:
    answer = {"bytes": 3, "sha256": "d" * 64, "seconds": 0.1}
    message = json.dumps({"reason": "Suspended", "message": json.dumps(answer), "sessionId": "s"})
    assert suspend.suspended_from_exit(message) == answer
    assert suspend.suspended_from_exit(json.dumps({"reason": "IdleTimeout", "message": "x"})) is None
    assert suspend.suspended_from_exit("not json") is None


def test_the_app_condition_says_why_suspend_is_unavailable() -> None:
    assert suspend.app_condition(False, True, True) is None  # off: no condition at all
    assert suspend.app_condition(True, False, True) == (
        False,
        "NoStateStore",
        f"idle sessions end instead: {suspend.NO_STORE}",
    )
    assert suspend.app_condition(True, True, False)[:2] == (False, "AppNotSuspendable")  # type: ignore[index]
    assert suspend.app_condition(True, True, None)[:2] == (True, "StoreConfigured")  # type: ignore[index]
    assert suspend.app_condition(True, True, True)[:2] == (True, "Suspendable")  # type: ignore[index]
