"""The inference.sh SDK from PyPI, unmodified, against the gateway: the sessions reference's examples
with only ``base_url`` changed (and a Kubernetes service-account token as the API key)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from inferencesh import APIError, Inference, TaskStatus, async_inference, inference

from ..cluster.conftest import GatewayProcess, seconds_between, service_account_token
from ..conftest import Cluster, await_condition

pytestmark = pytest.mark.cluster


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "sdk", allowed=True)


@pytest.fixture
def client(gateway: GatewayProcess, token: str) -> Inference:
    return inference(api_key=token, base_url=gateway.url)


class SessionManager:
    """The reference's session recovery pattern, as written there."""

    def __init__(self, client: Inference, app: str, timeout: int = 300) -> None:
        self.client, self.app, self.timeout = client, app, timeout
        self.session_id: str | None = None

    def ensure_session(self) -> str:
        if self.session_id is None:
            result: Any = self.client.run(
                {
                    "app": self.app,
                    "input": {"action": "init"},
                    "session": "new",
                    "session_timeout": self.timeout,
                }
            )
            self.session_id = result["session_id"]
        return self.session_id

    def run(self, input_data: dict[str, Any]) -> Any:
        try:
            return self.client.run({"app": self.app, "input": input_data, "session": self.ensure_session()})
        except Exception as e:
            if "session" in str(e).lower():
                self.session_id = None
                return self.client.run(
                    {"app": self.app, "input": input_data, "session": self.ensure_session()}
                )
            raise


def test_create_reuse_inspect_and_close(client: Inference) -> None:
    result: Any = client.run(
        {"app": "counter", "input": {"add": 1}, "session": "new", "session_timeout": 300}
    )
    session_id = result["session_id"]
    assert result["output"]["total"] == 1
    for n, total in ((2, 3), (3, 6)):
        again: Any = client.run({"app": "counter", "input": {"add": n}, "session": session_id})
        assert (again["session_id"], again["output"]["total"]) == (session_id, total)

    info: Any = client.sessions.get(session_id)
    assert (info["id"], info["status"], info["idle_timeout"]) == (session_id, "active", 300)
    # call_count is the worker's count as the operator last wrote it (throttled), so it may lag.
    assert info["expires_at"] and isinstance(info["call_count"], int)
    assert session_id in [s["id"] for s in client.sessions.list()]
    assert client.sessions.keepalive(session_id)["status"] == "active"

    client.sessions.end(session_id)
    assert client.sessions.get(session_id)["status"] in ("ended", "active")  # closing, then Closed
    with pytest.raises(Exception, match=r"(?i)session not found"):
        client.run({"app": "counter", "input": {"add": 1}, "session": session_id})


def test_app_reference_with_namespace_and_version(client: Inference) -> None:
    result: Any = client.run({"app": "okaris/counter@abc1", "input": {"add": 5}})
    assert result["output"]["total"] == 5 and result["session_id"]


def test_recovery_after_expiry(client: Inference) -> None:
    manager = SessionManager(client, "counter", timeout=2)
    first = manager.run({"add": 1})
    expired = manager.session_id
    assert first["output"]["total"] == 2 and expired  # the counter counts the init call as 1

    def ended() -> bool:
        return bool(client.sessions.get(expired)["status"] == "expired")

    await_condition(ended, timeout=60, what=f"session {expired} to expire")
    with pytest.raises(Exception, match=r"(?i)session not found"):
        client.run({"app": "counter", "input": {"action": "check"}, "session": expired})

    recovered = manager.run({"add": 7})
    assert manager.session_id != expired
    assert recovered["session_id"] == manager.session_id and recovered["output"]["total"] == 8


def test_async_client_sequential_calls_on_one_session(gateway: GatewayProcess, token: str) -> None:
    async def session_workflow() -> list[Any]:
        client = async_inference(api_key=token, base_url=gateway.url)
        result: Any = await client.run(
            {"app": "counter", "input": {"add": 0}, "session": "new", "session_timeout": 300}
        )
        session_id = result["session_id"]
        tasks = [
            client.run({"app": "counter", "input": {"add": 1}, "session": session_id}) for _ in range(10)
        ]
        results = []
        for task in tasks:
            results.append(await task)
        await client.sessions.end(session_id)
        return results

    results = asyncio.run(session_workflow())
    assert [r["output"]["total"] for r in results] == list(range(1, 11))
    assert len({r["session_id"] for r in results}) == 1


def test_stream_updates_end_with_the_result(client: Inference) -> None:
    updates = list(
        client.run(
            {"app": "counter", "input": {"add": 4}, "session": "new", "session_timeout": 60}, stream=True
        )
    )
    statuses = [TaskStatus(u["status"]) for u in updates]
    assert statuses[-1] == TaskStatus.COMPLETED and len(set(statuses)) >= 2, statuses
    assert updates[-1]["output"]["total"] == 4 and updates[-1]["session_id"]


def test_wait_false_then_get_task(client: Inference) -> None:
    task: Any = client.run({"app": "counter", "input": {"add": 2}}, wait=False)
    done = client.wait_for_completion(task["id"], timeout=60)
    assert done["output"]["total"] == 2
    assert client.get_task(task["id"]).data["status"] == TaskStatus.COMPLETED


def test_errors_come_out_in_the_sdk_exceptions(gateway: GatewayProcess, client: Inference) -> None:
    with pytest.raises(APIError) as bad_key:
        inference(api_key="not-a-token", base_url=gateway.url).run({"app": "counter", "input": {}})
    assert bad_key.value.status_code == 401
    with pytest.raises(APIError) as missing:
        client.run({"app": "counter", "input": {}, "session": "s-" + "a" * 24})
    assert missing.value.status_code == 404 and "session not found" in str(missing.value).lower()
    with pytest.raises(APIError) as unknown_app:
        client.run({"app": "nope", "input": {}})
    assert unknown_app.value.status_code == 404
    with pytest.raises(APIError) as refused:
        client.run({"app": "counter", "input": {}, "webhook": "https://example.com/hook"})
    assert refused.value.status_code == 400 and "webhook" in str(refused.value)
    with pytest.raises(APIError) as no_task:
        client.get_task("t-unknown")
    assert no_task.value.status_code == 404
    started = time.monotonic()
    with pytest.raises(APIError) as timeout:
        client.run({"app": "counter", "input": {}, "session": "new", "session_timeout": 99999})
    assert timeout.value.status_code == 400 and "session_timeout" in str(timeout.value)
    assert time.monotonic() - started < 10


def test_sessions_get_and_keepalive_show_the_live_deadline(client: Inference) -> None:
    result: Any = client.run(
        {"app": "counter", "input": {"add": 1}, "session": "new", "session_timeout": 300}
    )
    session_id = result["session_id"]
    before = client.sessions.get(session_id)
    time.sleep(1.2)  # deliberate: time has to pass for the deadline to move
    kept = client.sessions.keepalive(session_id)
    after = client.sessions.get(session_id)
    assert kept["expires_at"] == after["expires_at"], (kept, after)
    moved = seconds_between(before["expires_at"], after["expires_at"])
    assert 1.2 <= moved < 2.5, f"expires_at moved by {moved:.3f}s: {before} -> {after}"
    assert after["call_count"] == 1 and after["last_call_at"] == after["updated_at"]


def test_session_call_names_the_apps_functions(client: Inference) -> None:
    """``session.call(name, input)``: the counter's ``peek`` and ``reset`` share ``run``'s state."""
    with client.session("counter", input={"add": 4}) as session:
        peeked: Any = session.call("peek", {})
        assert peeked["output"] == {"total": 4, "calls": 1}
        assert session.call("reset", {"to": 10})["output"]["total"] == 10  # type: ignore[index]
        assert session.call("run", {"add": 1})["output"] == {"total": 11, "calls": 2}  # type: ignore[index]
        # The task fails with the worker's 400 (the SDK raises a failed task as RuntimeError).
        with pytest.raises(
            RuntimeError, match=r"unknown function 'navigate'; this app has: peek, reset, run"
        ):
            session.call("navigate", {"url": "https://example.com"})
