"""Leader election the Kubernetes way: one ``coordination.k8s.io`` Lease, held by renewing it.

Like client-go's leaderelection: the holder renews every ``retry_period``; it gives up
leadership when it has not renewed for ``renew_deadline``; the others may take the Lease once
``lease_duration`` has passed since it last changed. Every write carries the Lease's
resourceVersion, so of two candidates racing for it exactly one wins (the API's optimistic
concurrency, not anyone's memory). The replicas that are not leading keep their watches and
caches warm; only the leader acts, so taking over needs no warm-up.

Every request is cut at the renew deadline, and a renewal at the moment the deadline passes: a
connection that stalls (no answer, no error) must not keep a leader acting after a standby may
have taken the Lease.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.common.timefmt import parse_rfc3339, rfc3339

log = logging.getLogger("kubesessions.kube.leader")

LEASE_NAME = "kube-sessions-operator"


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    identity: str
    name: str = LEASE_NAME
    # client-go's (and controller-runtime's) defaults.
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


@dataclass(frozen=True)
class Observed:
    """A Lease's holder as last read, and when (monotonic) this replica saw it change."""

    holder: str | None
    renew_time: datetime.datetime | None
    seen_at: float
    duration: float  # the Lease's own leaseDurationSeconds (its holder chose it)


def may_take(
    lease: dict[str, Any] | None, observed: Observed | None, settings: LeaseSettings, now: float
) -> bool:
    """Whether this replica may write itself in as holder. Expiry is judged by this replica's
    own clock since it saw the Lease last change (client-go's rule: no trust in other clocks)."""
    if lease is None:
        return True
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder or holder == settings.identity:
        return True
    return observed is not None and now - observed.seen_at >= observed.duration


def lease_body(
    settings: LeaseSettings, transitions: int, acquired: str, resource_version: str | None
) -> dict[str, Any]:
    now = rfc3339(precision="microseconds")
    metadata: dict[str, Any] = {"name": settings.name, "namespace": settings.namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": settings.identity,
            "leaseDurationSeconds": round(settings.lease_duration),
            "acquireTime": acquired,
            "renewTime": now,
            "leaseTransitions": transitions,
        },
    }


class LeaderElector:
    def __init__(
        self, api: client.ApiClient, settings: LeaseSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._leases = client.CoordinationV1Api(api)
        self._api = api
        self.settings = settings
        self._clock = clock
        self._observed: Observed | None = None
        self._lease: dict[str, Any] | None = None
        self.leading = False
        self.renewed_at = 0.0  # when the last write that made this replica the holder was sent
        self.changes_seen = 0  # the Lease's holder or renewTime, as this replica saw them change

    async def _read(self) -> dict[str, Any] | None:
        try:
            raw = await self._leases.read_namespaced_lease(
                self.settings.name, self.settings.namespace, _request_timeout=self.settings.renew_deadline
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        lease: dict[str, Any] = self._api.sanitize_for_serialization(raw)
        self._note(lease)
        return lease

    def _note(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        # A read (the client's models) and a watch event (raw JSON) spell the same instant
        # differently ("+00:00" / "Z"): compare instants, or every look would seem a change.
        holder, renewed = spec.get("holderIdentity"), parse_rfc3339(spec.get("renewTime"))
        seen = self._observed
        if seen is None or (seen.holder, seen.renew_time) != (holder, renewed):
            duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
            self._observed = Observed(holder, renewed, self._clock(), duration)
            self.changes_seen += 1

    async def _follow(self) -> None:
        """Note each change of the Lease as it happens (a watch): a standby that only polled
        would see a renewal up to a retry period late, and so take over that much later."""
        s = self.settings
        while True:
            try:
                stream = watch.Watch(return_type="object").stream(
                    self._leases.list_namespaced_lease,
                    s.namespace,
                    field_selector=f"metadata.name={s.name}",
                    timeout_seconds=300,
                )
                async for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._note(event["raw_object"])
            except (ApiException, OSError, TimeoutError, aiohttp.ClientError) as err:
                log.warning("leader election: watch on Lease %s/%s ended: %s", s.namespace, s.name, err)
            await asyncio.sleep(s.retry_period)

    async def try_take(self) -> bool:
        """One attempt to become (or stay) the holder; True when this replica holds the Lease."""
        s = self.settings
        timeout = s.renew_deadline
        try:
            lease = await self._read()
            if not may_take(lease, self._observed, s, self._clock()):
                return False
            if lease is None:
                body = lease_body(s, 0, rfc3339(precision="microseconds"), None)
                created = await self._leases.create_namespaced_lease(
                    s.namespace, cast(Any, body), _request_timeout=timeout
                )
                self._lease = self._api.sanitize_for_serialization(created)
                return True
            spec = lease.get("spec") or {}
            mine = spec.get("holderIdentity") == s.identity
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            acquired = spec.get("acquireTime") if mine else rfc3339(precision="microseconds")
            body = lease_body(
                s,
                transitions,
                acquired or rfc3339(precision="microseconds"),
                lease["metadata"]["resourceVersion"],
            )
            replaced = await self._leases.replace_namespaced_lease(
                s.name, s.namespace, cast(Any, body), _request_timeout=timeout
            )
            self._lease = self._api.sanitize_for_serialization(replaced)
            return True
        except ApiException as err:
            if err.status == 409:  # another replica wrote first: it holds the Lease
                return False
            log.warning("leader election: Lease %s/%s: %s %s", s.namespace, s.name, err.status, err.reason)
            return False
        except (TimeoutError, OSError, aiohttp.ClientError) as err:
            log.warning("leader election: Lease %s/%s unreachable: %s", s.namespace, s.name, err)
            return False

    async def acquire(self) -> None:
        """Return once this replica leads. Between tries: the retry period, with jitter, or the
        moment the current holder's Lease would expire, whichever comes first."""
        s = self.settings
        log.info(
            "leader election: waiting to lead (Lease %s/%s, identity %s)", s.namespace, s.name, s.identity
        )
        following = asyncio.create_task(self._follow(), name="lease-watch")
        try:
            while not await self._try_take_noting_when():
                wait = s.retry_period * (1 + 0.2 * random.random())  # noqa: S311 - jitter, not a secret
                if self._observed is not None:
                    expires_in = self._observed.seen_at + self._observed.duration - self._clock()
                    wait = max(0.05, min(wait, expires_in + 0.01))
                await asyncio.sleep(wait)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        self.leading = True
        log.info("leader election: leading as %s", s.identity)

    async def _try_take_noting_when(self) -> bool:
        # When the attempt began, not when its answer came: the API server may have stored the
        # write (and a standby started its expiry clock) any time after that.
        sent = self._clock()
        if not await self.try_take():
            return False
        self.renewed_at = sent
        return True

    async def hold(self) -> None:
        """Renew every retry period; return when no renewal succeeded for the renew deadline,
        cutting a renewal still waiting for an answer then (client-go's rule)."""
        s = self.settings
        while True:
            await asyncio.sleep(s.retry_period)
            left = self.renewed_at + s.renew_deadline - self._clock()
            if left > 0:
                try:
                    async with asyncio.timeout(left):
                        if await self._try_take_noting_when():
                            continue
                    left = self.renewed_at + s.renew_deadline - self._clock()
                except TimeoutError:
                    left = 0
            if left <= 0:
                log.error(
                    "leader election: could not renew the Lease for %.0f s: no longer leading",
                    s.renew_deadline,
                )
                self.leading = False
                return

    async def release(self) -> None:
        """Hand the Lease back on a clean shutdown, so a standby need not wait for it to expire."""
        if self._lease is None:
            return
        s = self.settings
        body = lease_body(
            s, int(self._lease["spec"].get("leaseTransitions") or 0), self._lease["spec"]["acquireTime"], None
        )
        body["metadata"]["resourceVersion"] = self._lease["metadata"]["resourceVersion"]
        body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
        try:
            await self._leases.replace_namespaced_lease(
                s.name, s.namespace, cast(Any, body), _request_timeout=s.renew_deadline
            )
        except (ApiException, OSError, TimeoutError) as err:
            log.warning("leader election: could not release the Lease: %s", err)
