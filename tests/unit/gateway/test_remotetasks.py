"""A task's id names its session, so any gateway replica can find the worker that holds it."""

from __future__ import annotations

import pytest

from kubesessions.gateway import remotetasks

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("namespace", "session"), [("default", "s-0123456789abcdef01234567"), ("team-a", "made.with.kubectl")]
)
def test_the_task_id_carries_its_call_and_session(namespace: str, session: str) -> None:
    task = remotetasks.task_id("t-abc", namespace, session)
    assert task.startswith("t-abc.") and task.isascii() and "/" not in task
    assert remotetasks.place(task) == ("t-abc", namespace, session)


@pytest.mark.parametrize("task", ["t-abc", "t-abc.", ".abc", "t-abc.!!!!", "t-abc.mfrgg"])
def test_ids_that_are_not_ours_have_no_place(task: str) -> None:
    assert remotetasks.place(task) is None


def call(**fields: object) -> dict[str, object]:
    return {
        "state": "finished",
        "cancelled": False,
        "streamed": False,
        "outputs": [],
        "error": None,
        **fields,
    }


@pytest.mark.parametrize(
    ("state", "status", "output", "error"),
    [
        (call(state="queued"), 2, None, None),
        (call(state="running", outputs=[1]), 7, None, None),
        (call(outputs=[{"total": 3}]), 10, {"total": 3}, None),
        (call(streamed=True, outputs=["a", "b"]), 10, ["a", "b"], None),
        (call(error={"code": "RUN_FAILED", "detail": "boom"}), 11, None, "boom"),
        (call(cancelled=True, outputs=[1]), 12, None, "cancelled"),
    ],
)
def test_a_calls_state_becomes_the_sdks_task_status(
    state: dict[str, object], status: int, output: object, error: str | None
) -> None:
    task = remotetasks.from_call("t-1.x", "ns", "s-1", "counter", state)
    assert (task["status"], task["output"], task["error"]) == (status, output, error)
    assert (task["namespace"], task["session_id"], task["app"]) == ("ns", "s-1", "counter")
