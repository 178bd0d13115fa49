"""The Python client against the real gateway: the reference's async flow, streams, keepalive, sessions."""

from __future__ import annotations

import asyncio

import pytest

from kubesessions.client import AsyncClient, AsyncRecoveringSession, SessionEnded

from ..conftest import Cluster, await_session, phase_is
from .conftest import GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster


async def test_async_session_workflow_of_the_reference(
    gateway: GatewayProcess, kube: Cluster, namespace: str
) -> None:
    token = service_account_token(kube, namespace, "async-caller", allowed=True)
    async with AsyncClient(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        result = await client.run(
            {"app": "counter", "input": {"add": 0}, "session": "new", "session_timeout": 300}
        )
        session_id = result["session_id"]
        # Ten calls issued at once run one after the other on the same worker.
        results = await asyncio.gather(
            *(client.run({"app": "counter", "input": {"add": 1}, "session": session_id}) for _ in range(10))
        )
        assert sorted(r["output"]["calls"] for r in results) == list(range(2, 12))
        assert max(r["output"]["total"] for r in results) == 10
        kept = await client.keepalive(session_id)
        assert kept["session_id"] == session_id and kept["last_activity"].endswith("Z")
        listed = await client.list_sessions(app="counter")
        assert [s["session_id"] for s in listed] == [session_id]

        async with client.session("stream", session_timeout=60) as session:
            words = [w async for w in session.stream({"text": "tokens one by one"})]
            assert words == ["tokens", "one", "by", "one"]
            assert (await session.info())["phase"] == "Ready"
        with pytest.raises(SessionEnded, match="session not found"):
            await session.run({"text": "again"})


async def test_async_recovery_starts_a_new_session_and_replays(
    gateway: GatewayProcess, kube: Cluster, namespace: str
) -> None:
    token = service_account_token(kube, namespace, "async-recovering", allowed=True)
    async with AsyncClient(gateway.url, token=token, namespace=namespace, request_timeout=60) as client:
        async with AsyncRecoveringSession(client, "counter", session_timeout=1, init={"add": 100}) as manager:
            assert (await manager.run({"add": 1}))["output"]["total"] == 101
            first = manager.session_id
            assert first is not None
            await asyncio.to_thread(
                await_session, kube, namespace, first, phase_is("Expired"), 15, "the idle session to expire"
            )
            result = await manager.run({"add": 1})
            assert manager.recoveries == 1 and manager.session_id not in (None, first)
            assert result["output"]["total"] == 101, "the new session was initialised, then the call replayed"
            second = manager.session_id
        assert manager.session_id is None and second is not None
        await asyncio.to_thread(
            await_session,
            kube,
            namespace,
            second,
            phase_is("Closed"),
            15,
            "the block's end to close the session",
        )
