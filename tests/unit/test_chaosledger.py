"""The fault suite's books: which acknowledged totals prove a call lost or run twice."""

from __future__ import annotations

import pytest

from tests.faults.chaosledger import Ledger, Outcome, Phase

pytestmark = pytest.mark.unit


def books(*calls: tuple[str, int | None]) -> Ledger:
    """One load thread's calls of add 1 in turn: (session, acknowledged total or None if failed)."""
    ledger = Ledger()
    for n, (session, total) in enumerate(calls):
        ledger.add(Outcome(0, float(n), n + 0.5, session, 1, total, "" if total else "GatewayUnavailable"))
    return ledger


def kinds(ledger: Ledger) -> list[tuple[str, int]]:
    return [(v.kind, v.calls) for v in ledger.audit()]


def test_totals_growing_by_one_per_call_are_exactly_once() -> None:
    assert kinds(books(("s", 1), ("s", 2), ("s", 3))) == []


def test_a_failed_call_may_have_run_once() -> None:
    assert kinds(books(("s", 1), ("s", None), ("s", 3))) == [], "it ran"
    assert kinds(books(("s", 1), ("s", None), ("s", 2))) == [], "it did not"


def test_a_total_that_grew_too_much_is_a_call_run_twice() -> None:
    assert kinds(books(("s", 1), ("s", 3))) == [("ran_twice", 1)]
    assert kinds(books(("s", 1), ("s", None), ("s", 4))) == [("ran_twice", 1)]


def test_a_total_that_did_not_grow_is_an_acknowledged_call_lost() -> None:
    assert kinds(books(("s", 1), ("s", 2), ("s", 2))) == [("lost", 1)]
    assert kinds(
        books(
            ("s", 5),
        )
    ) == [("ran_twice", 4)], "a new session starts at 0"


def test_a_new_session_starts_its_own_count() -> None:
    assert kinds(books(("a", 1), ("a", 2), ("b", 1), ("b", 2))) == []


def test_figures_count_within_a_phase() -> None:
    ledger = books(("s", 1), ("s", None), ("s", 3), ("s", 5))
    figures = ledger.figures(Phase("f", 1.0, 10.0), ledger.audit())
    assert figures == {
        "acknowledged": 2,
        "failed": 1,
        "failed_reasons": {"GatewayUnavailable": 1},
        "lost": 0,
        "ran_twice": 1,
        "sent_again": {},
        "cut_in_flight": 0,
    }
    assert ledger.acked_since(2.0) == {0}
    assert ledger.acked_since(4.0) == set()


def test_calls_cut_in_flight_are_the_retries_no_answer_explains() -> None:
    # A gateway that died mid-call leaves a transport error ("RemoteDisconnected"); a 503 is an
    # answer: only the first shows that a call was cut and sent again with its call id.
    ledger = Ledger()
    ledger.retries += [(2.0, "RemoteDisconnected"), (3.0, "HTTP 503"), (4.0, "ConnectionResetError")]
    ledger.retries.append((20.0, "RemoteDisconnected"))  # after the phase
    figures = ledger.figures(Phase("f", 1.0, 10.0), [])
    assert figures["sent_again"] == {"RemoteDisconnected": 1, "HTTP 503": 1, "ConnectionResetError": 1}
    assert figures["cut_in_flight"] == 2
