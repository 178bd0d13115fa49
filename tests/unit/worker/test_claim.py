"""A warm pool worker: nothing but the claim (and the operator's looks) until a session claims it."""

from __future__ import annotations

from typing import Any

import pytest

from kubesessions_worker.claim import Slot

from .harness import AUTH, FakeClock, worker

pytestmark = pytest.mark.unit

SESSION_TOKEN = "session-token-0123456789"
SESSION_AUTH = {"Authorization": f"Bearer {SESSION_TOKEN}"}
CLAIM = {"session": "s-1", "token": SESSION_TOKEN, "sessionTimeout": 30}


async def _post(w: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with w.client.post(path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_unclaimed_worker_takes_no_calls_then_becomes_the_sessions() -> None:
    clock = FakeClock()
    slot = Slot(pooled=True)
    async with worker("Echo", slot=slot, clock=clock) as w:
        status, body = await w.call({"x": 1})
        assert (status, body["code"]) == (503, "NOT_READY")
        clock.advance(500)  # waiting in the pool is not idleness of any session
        status, body = await _post(w, "/claim", CLAIM, AUTH)
        assert (status, body) == (200, {"sessionId": "s-1", "claimed": True})
        assert slot.claimed.is_set()
        # The pool token no longer opens it; the session's does, and the idle clock starts now.
        status, _ = await _post(w, "/run", {"input": 1}, AUTH)
        assert status == 401
        async with w.client.get("/status", headers=SESSION_AUTH) as resp:
            seen = await resp.json()
        assert (seen["sessionId"], seen["sessionTimeout"], seen["idleSeconds"]) == ("s-1", 30, 0)
        status, body = await _post(w, "/run", {"input": {"x": 1}}, SESSION_AUTH)
        assert (status, body["output"]) == (200, {"x": 1})


async def test_a_repeated_claim_answers_the_same_and_another_session_is_refused() -> None:
    async with worker("Echo", slot=Slot(pooled=True)) as w:
        assert (await _post(w, "/claim", CLAIM, AUTH))[0] == 200
        # An operator restarted mid-claim repeats it with the session's token.
        assert (await _post(w, "/claim", CLAIM, SESSION_AUTH))[0] == 200
        other = {**CLAIM, "session": "s-2"}
        status, body = await _post(w, "/claim", other, SESSION_AUTH)
        assert (status, body["code"]) == (409, "CLAIMED")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({**CLAIM, "session": "Bad_Name"}, "session"),
        ({**CLAIM, "token": "short"}, "token"),
        ({**CLAIM, "sessionTimeout": 0}, "sessionTimeout"),
        ({**CLAIM, "sessionTimeout": 3601}, "1..3600"),
        ([1], "session"),
    ],
)
async def test_bad_claims_name_the_field_and_change_nothing(body: Any, named: str) -> None:
    slot = Slot(pooled=True)
    async with worker("Echo", slot=slot) as w:
        status, problem = await _post(w, "/claim", body, AUTH)
        assert (status, problem["code"]) == (400, "VALIDATION")
        assert named in problem["detail"]
        assert not slot.claimed.is_set()


async def test_a_session_worker_has_no_claim_route() -> None:
    async with worker("Echo") as w, w.client.post("/claim", json=CLAIM, headers=AUTH) as resp:
        assert resp.status in (404, 405)
