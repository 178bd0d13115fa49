"""The pure rules of leader election: who may write itself into the Lease, and when."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kubesessions.kube.leader import LeaderElector, LeaseSettings, Observed, lease_body, may_take

pytestmark = pytest.mark.unit
ME = LeaseSettings(namespace="ops", identity="me", lease_duration=15, renew_deadline=10, retry_period=2)


def lease(
    holder: str | None, renewed: str = "2026-11-29T10:00:00.000000Z", duration: int = 15
) -> dict[str, Any]:
    return {"spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": duration}}


def test_a_missing_or_released_lease_is_free() -> None:
    assert may_take(None, None, ME, now=0)
    assert may_take(lease(None), None, ME, now=0)
    assert may_take(lease(""), None, ME, now=0)


def test_the_holder_may_always_renew() -> None:
    assert may_take(lease("me"), None, ME, now=0)


def test_another_holder_expires_by_our_clock_since_we_saw_it_change() -> None:
    seen = Observed("other", None, seen_at=100.0, duration=15)
    assert not may_take(lease("other"), seen, ME, now=100.0)
    assert not may_take(lease("other"), seen, ME, now=114.9)
    assert may_take(lease("other"), seen, ME, now=115.0)
    # The Lease's own duration counts, not ours (the holder chose it).
    longer = Observed("other", None, seen_at=100.0, duration=30)
    assert not may_take(lease("other", duration=30), longer, ME, now=115.0)


def test_a_lease_never_seen_change_is_not_taken() -> None:
    # Without an observation there is no local clock to judge expiry by: wait one more read.
    assert not may_take(lease("other"), None, ME, now=1e9)


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)]
)
def test_settings_must_be_ordered(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseSettings(
            namespace="ops",
            identity="me",
            lease_duration=duration,
            renew_deadline=deadline,
            retry_period=retry,
        )


def test_lease_body_carries_the_version_it_replaces() -> None:
    body = lease_body(ME, transitions=3, acquired="2026-11-29T10:00:00.000000Z", resource_version="42")
    assert body["metadata"] == {"name": "kube-sessions-operator", "namespace": "ops", "resourceVersion": "42"}
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseDurationSeconds"] == 15
    assert body["spec"]["leaseTransitions"] == 3
    assert "resourceVersion" not in lease_body(ME, 0, "x", None)["metadata"]


async def test_one_instant_spelled_two_ways_is_not_a_change() -> None:
    # Reads come back through the client's models ("+00:00"), watch events as raw JSON ("Z"):
    # were they two changes, a standby would restart its expiry clock on every look.
    from kubernetes_asyncio import client

    ticks = iter(range(100))
    async with client.ApiClient() as api:
        elector = LeaderElector(api, ME, clock=lambda: float(next(ticks)))
        elector._note(lease("other", renewed="2026-11-29T10:00:00.123456Z"))
        elector._note(lease("other", renewed="2026-11-29T10:00:00.123456+00:00"))
        assert elector.changes_seen == 1
        elector._note(lease("other", renewed="2026-11-29T10:00:02.000000Z"))
        assert elector.changes_seen == 2


class HangingLeases:
    """A CoordinationV1Api whose every call waits forever: a connection that stalls."""

    def __init__(self) -> None:
        self.calls = 0

    async def read_namespaced_lease(self, *_: Any, **__: Any) -> Any:
        self.calls += 1
        await asyncio.Event().wait()


async def test_a_renewal_that_hangs_gives_up_leadership_at_the_renew_deadline() -> None:
    # A hung request (no answer, no error) must not keep a leader acting past the renew
    # deadline: by then a standby may be about to take the Lease.
    from kubernetes_asyncio import client

    fast = LeaseSettings(
        namespace="ops", identity="me", lease_duration=1.5, renew_deadline=1.0, retry_period=0.2
    )
    async with client.ApiClient() as api:
        elector = LeaderElector(api, fast)
        hanging = HangingLeases()
        elector._leases = hanging  # type: ignore[assignment]
        elector.leading, elector.renewed_at = True, time.monotonic()
        started = time.monotonic()
        await asyncio.wait_for(elector.hold(), timeout=10)
        took = time.monotonic() - started
    assert hanging.calls == 1
    assert not elector.leading
    assert took < fast.renew_deadline + 1.0, f"leadership held {took:.2f} s with a renewal hanging"
