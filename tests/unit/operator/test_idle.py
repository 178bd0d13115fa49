from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubesessions.control.decide import idle

pytestmark = pytest.mark.unit

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
timeouts = st.integers(min_value=1, max_value=3600)


@given(now=times, last=times, timeout=timeouts, busy=st.booleans())
def test_never_early(now: float, last: float, timeout: int, busy: bool) -> None:
    decision = idle.decide(now, last, timeout, busy)
    if decision.expire:
        assert not busy
        assert now >= last + timeout


@given(last=times, timeout=timeouts, elapsed=st.floats(min_value=0, max_value=7200, allow_nan=False))
def test_never_later_than_one_look(last: float, timeout: int, elapsed: float) -> None:
    """Following the looks it asks for, an idle session expires within one look of its deadline."""
    now = last + elapsed
    for _ in range(100):
        decision = idle.decide(now, last, timeout, in_flight=False)
        if decision.expire:
            assert now - (last + timeout) <= idle.EPSILON + 1e-6 or now == last + elapsed
            return
        assert decision.look_again_in is not None and decision.look_again_in > 0
        now += decision.look_again_in
    pytest.fail("never expired")


@given(timeout=timeouts, now=times)
def test_busy_looks_are_bounded(timeout: int, now: float) -> None:
    decision = idle.decide(now, now - 10_000, timeout, in_flight=True)
    assert not decision.expire
    assert decision.look_again_in == idle.busy_look_interval(timeout)
    assert (
        idle.BUSY_LOOK_MIN
        <= decision.look_again_in
        <= min(idle.BUSY_LOOK_MAX, max(idle.BUSY_LOOK_MIN, timeout))
    )


def test_examples() -> None:
    assert idle.decide(10.0, 8.0, 2, False).expire
    assert not idle.decide(9.9, 8.0, 2, False).expire
    assert idle.decide(9.0, 8.0, 2, False).look_again_in == pytest.approx(1.0 + idle.EPSILON)
    assert idle.write_interval(2) == 1.0 and idle.write_interval(600) == 60.0
    assert [idle.unreachable_backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 10.0]
