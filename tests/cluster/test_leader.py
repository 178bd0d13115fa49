"""Operator HA: two replicas, one Lease; exactly one acts, the other takes over when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

from kubesessions.kube.leader import LeaderElector, LeaseSettings

from ..conftest import Cluster, OperatorProcess, await_condition, await_session
from .test_operator import create_app, create_session

pytestmark = pytest.mark.cluster
# Short durations keep the test quick; the defaults (15/10/2 s) are measured by bench/failover.py.
LEASE_DURATION = 3.0
LEASE_FLAGS = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5")


def replica(kube: Cluster, namespace: str, tmp_path: Path, name: str) -> OperatorProcess:
    log_dir = tmp_path / name
    log_dir.mkdir()
    return OperatorProcess(
        kube,
        namespace,
        log_dir,
        "--retention",
        "5",
        "--leader-elect",
        "--lease-namespace",
        namespace,
        *LEASE_FLAGS,
    ).start()


def lease(kube: Cluster, namespace: str) -> client.V1Lease | None:
    try:
        found: client.V1Lease = client.CoordinationV1Api(kube.api).read_namespaced_lease(
            "kube-sessions-operator", namespace
        )
        return found
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def holder_is(kube: Cluster, namespace: str, op: OperatorProcess | None) -> bool:
    found = lease(kube, namespace)
    holder = found.spec.holder_identity if found is not None else None
    if op is None:
        return not holder
    assert op.proc is not None
    return bool(holder) and holder.endswith(f"-{op.proc.pid}")


def writes(op: OperatorProcess) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("kubesessions_operator_api_writes_total"))


def reconciled(obj: dict[str, Any]) -> bool:
    return bool((obj.get("status") or {}).get("phase"))


@pytest.fixture
def replicas(kube: Cluster, namespace: str, crds: None, tmp_path: Path) -> Any:
    started: list[OperatorProcess] = []

    def start(name: str) -> OperatorProcess:
        op = replica(kube, namespace, tmp_path, name)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def test_one_replica_acts_and_the_other_takes_over_after_kill_9(
    kube: Cluster, namespace: str, replicas: Any
) -> None:
    create_app(kube, namespace)
    first = replicas("a")
    await_condition(lambda: holder_is(kube, namespace, first), timeout=15, what="replica a to hold the Lease")
    second = replicas("b")
    create_session(kube, namespace, "s1", app="counter", sessionTimeout=60)
    await_session(kube, namespace, "s1", reconciled, timeout=30, what="s1 reconciled by the leader")
    assert writes(first) > 0
    assert writes(second) == 0, "the standby wrote to the API while another replica led"
    assert (
        first.metrics()["kubesessions_operator_leading"],
        second.metrics()["kubesessions_operator_leading"],
    ) == (1, 0)
    assert holder_is(kube, namespace, first)

    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    killed = time.monotonic()
    create_session(kube, namespace, "s2", app="counter", sessionTimeout=60)
    await_session(kube, namespace, "s2", reconciled, timeout=30, what="s2 reconciled by the new leader")
    took = time.monotonic() - killed
    assert holder_is(kube, namespace, second)
    found = lease(kube, namespace)
    assert found is not None and found.spec.lease_transitions >= 1
    assert writes(second) > 0
    assert second.metrics()["kubesessions_operator_leading"] == 1
    # Expiry (by the standby's clock from when it last saw a renewal) plus one try.
    assert took < LEASE_DURATION + 3, f"the standby took {took:.1f} s to act after the leader died"


def test_a_clean_stop_hands_the_lease_over_at_once(kube: Cluster, namespace: str, replicas: Any) -> None:
    first = replicas("a")
    await_condition(lambda: holder_is(kube, namespace, first), timeout=15, what="replica a to hold the Lease")
    second = replicas("b")
    first.stop(signal.SIGTERM)
    released = time.monotonic()
    await_condition(
        lambda: holder_is(kube, namespace, second), timeout=15, what="replica b to take the Lease"
    )
    # Released, not expired: well within one lease duration (the standby tries every 0.5 s).
    assert time.monotonic() - released < LEASE_DURATION


def test_a_leader_that_cannot_renew_stops(kube: Cluster, namespace: str, replicas: Any) -> None:
    first = replicas("a")
    await_condition(lambda: holder_is(kube, namespace, first), timeout=15, what="replica a to hold the Lease")
    # Someone else writes itself into the Lease for a long time: the leader's renewals fail.
    api = client.CoordinationV1Api(kube.api)
    found = lease(kube, namespace)
    assert found is not None
    found.spec.holder_identity = "intruder"
    found.spec.lease_duration_seconds = 3600
    api.replace_namespaced_lease("kube-sessions-operator", namespace, found)
    assert first.proc is not None
    proc = first.proc
    await_condition(
        lambda: proc.poll() is not None, timeout=15, what="the leader that lost its Lease to exit"
    )
    assert proc.returncode != 0
    assert "leadership lost" in first.log.read_text()


class StallingProxy:
    """A TCP proxy to the API server that can stall: it keeps every socket open (and accepts new
    ones) but moves no more bytes, as a connection through a dead NAT or a hung server does."""

    def __init__(self, upstream: str) -> None:
        parsed = urlsplit(upstream)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 443)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.pipes: set[asyncio.Task[None]] = set()
        self.moved = 0  # reads passed on, both ways (TLS records of requests and answers)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    def stall(self) -> None:
        self.flowing.clear()

    async def close(self) -> None:
        self.server.close()
        for pipe in self.pipes:
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(src, dst))
            self.pipes.add(pipe)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            await self.flowing.wait()  # stalled: the bytes stay here, the sockets stay open
            dst.write(data)
            await dst.drain()
            self.moved += 1


async def test_a_leader_whose_connection_stalls_stops_before_a_standby_takes_over(
    kube: Cluster, namespace: str
) -> None:
    # No refusal, no reset: the leader's requests just never get an answer. Each renewal must
    # be cut at the renew deadline, and leading stop then, before the Lease can expire.
    settings = {"namespace": namespace, "lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}
    direct = aclient.Configuration()
    await aconfig.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=direct)
    proxy = StallingProxy(direct.host)
    proxied = aclient.Configuration()
    await aconfig.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=proxied)
    proxied.host = await proxy.start()
    async with aclient.ApiClient(proxied) as via_proxy, aclient.ApiClient(direct) as api:
        first = LeaderElector(via_proxy, LeaseSettings(identity="first", **settings))
        second = LeaderElector(api, LeaseSettings(identity="second", **settings))
        await asyncio.wait_for(first.acquire(), timeout=30)
        holding = asyncio.create_task(first.hold())
        taking = asyncio.create_task(second.acquire())
        # Renewals pass through the proxy (a handshake and a few requests and answers) before it stalls.
        moved = proxy.moved
        deadline = time.monotonic() + 30
        while proxy.moved < moved + 12:
            assert time.monotonic() < deadline, "no renewals went through the proxy"
            await asyncio.sleep(0.05)
        assert not holding.done() and not taking.done(), "the Lease changed hands while renewing worked"
        proxy.stall()
        stalled = time.monotonic()
        await asyncio.wait_for(asyncio.shield(holding), timeout=30)
        stopped = time.monotonic()
        assert not first.leading
        # The last renewal began at most one retry period before the stall.
        assert stopped - stalled < 2.0 + 1.0, f"leading went on {stopped - stalled:.1f} s after the stall"
        assert not taking.done(), "the standby took the Lease while the old leader still led"
        await asyncio.wait_for(taking, timeout=30)
        assert second.leading
        await proxy.close()
