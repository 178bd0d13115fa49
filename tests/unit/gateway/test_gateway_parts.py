"""Gateway parts without a cluster: validation, ordering, replies, SSE, worker problems, auth cache, cache waits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from kubesessions.api.models import AppSpec, is_dns1123_subdomain
from kubesessions.gateway import openapi
from kubesessions.gateway.auth import KubernetesAuth, Verb
from kubesessions.gateway.cache import Cache
from kubesessions.gateway.forward import Reply, Sequencer, done_members, snake_events, sse_events
from kubesessions.gateway.problems import Problem, from_worker
from kubesessions.gateway.requests import SESSION_ID, RunRequest, call_id, new_session_id, parse, session_spec
from kubesessions.gateway.sessions import GatewaySettings, Sessions, live, view
from kubesessions.kube.kubeapi import Kube

pytestmark = pytest.mark.unit


def test_session_ids_are_unguessable_dns_names() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(SESSION_ID.match(i) and is_dns1123_subdomain(i) for i in ids)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"{nope", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"app": "a"}', "input: Field required"),
        (
            b'{"input": 1, "session_timeout": 0}',
            "session_timeout: Input should be greater than or equal to 1 (a whole number of seconds, 1..3600)",
        ),
        (b'{"input": 1, "session_timeout": 3601}', "1..3600"),
        (b'{"input": 1, "session_timeout": "60"}', "session_timeout"),
        (b'{"input": 1, "stream": "yes"}', "stream"),
        (b'{"input": 1, "surprise": 1}', "surprise: Extra inputs are not permitted"),
        (b'{"input": 1, "app": "Not_A_Name"}', "app: String should match pattern"),
        # The gateway creates Sessions with its own rights: a caller never hands it a template
        # (issue 25, defect 1), so no image, Secret or node reaches a Session through it.
        (b'{"input": 1, "app": "a", "template": {"image": "x"}}', "template: Extra inputs are not permitted"),
    ],
)
def test_bad_run_requests_name_the_field(raw: bytes, text: str) -> None:
    with pytest.raises(Problem) as err:
        parse(RunRequest, raw)
    assert (err.value.code, int(err.value.status)) == ("VALIDATION", 400)
    assert text in err.value.detail


def test_timeout_over_the_apps_maximum_is_refused() -> None:
    request = parse(RunRequest, b'{"app": "m", "input": 1, "session_timeout": 900}')
    with pytest.raises(Problem, match="maxSessionTimeout of 600"):
        session_spec(request, AppSpec(image="i", maxSessionTimeout=600, defaultSessionTimeout=60))
    spec = session_spec(request, AppSpec(image="i"))
    assert (spec.app, spec.sessionTimeout, spec.template) == ("m", 900, None)


async def test_sequencer_gives_turns_in_arrival_order_and_forgets_idle_keys() -> None:
    seq, order = Sequencer(), []

    async def caller(i: int) -> None:
        async with seq.turn(("ns", "s")):
            order.append(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(caller(i) for i in range(20)))
    assert order == list(range(20))
    assert len(seq) == 0


def test_reply_renders_one_output_or_the_list_of_a_stream_in_snake_case() -> None:
    done = done_members(b'{"sessionClosed":false,"durationMs":1.5}')
    one = json.loads(Reply([b'{"a":1}'], done).body("s-x"))
    assert one == {"session_id": "s-x", "output": {"a": 1}, "session_closed": False, "duration_ms": 1.5}
    assert json.loads(Reply([b"1", b"2"], done).body("s-x"))["output"] == [1, 2]
    assert json.loads(Reply([], done).body("s-x"))["output"] == []
    assert json.loads(Reply([b"1"], done_members(b"{}")).body("s-x")) == {"session_id": "s-x", "output": 1}


async def test_streamed_done_and_error_events_come_out_in_snake_case_outputs_untouched() -> None:
    stream = (
        b'event: output\ndata: {"keepMe": 1}\n\nevent: done\ndata: {"sessionClosed":true,"durationMs":2}\n\n'
        b'event: error\ndata: {"status": 500, "code": "RUN_FAILED", "errorType": "ValueError"}\n\n'
    )

    async def chunks(size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(stream), size):
            yield stream[i : i + size]

    for size in (1, 7, len(stream)):  # events split anywhere across the worker's writes
        out = b"".join([chunk async for chunk in snake_events(chunks(size))])
        events = list(sse_events(out.splitlines()))
        assert [e for e, _ in events] == ["output", "done", "error"]
        assert events[0][1] == b'{"keepMe": 1}'
        assert json.loads(events[1][1]) == {"session_closed": True, "duration_ms": 2}
        assert json.loads(events[2][1])["error_type"] == "ValueError"


def test_sse_events_are_parsed_line_by_line() -> None:
    body = b"event: output\ndata: 1\n\nevent: output\ndata: [1,\ndata: 2]\n\r\nevent: done\ndata: {}\n"
    assert list(sse_events(body.splitlines())) == [
        ("output", b"1"),
        ("output", b"[1,\n2]"),
        ("done", b"{}"),
    ]


@pytest.mark.parametrize(
    ("status", "body", "code", "http"),
    [
        (429, {"code": "QUEUE_FULL", "detail": "full"}, "QUEUE_FULL", 429),
        (500, {"code": "RUN_FAILED", "detail": "boom", "errorType": "ValueError"}, "RUN_FAILED", 500),
        (504, {"code": "CALL_TIMEOUT", "detail": "late"}, "CALL_TIMEOUT", 504),
        (410, {"code": "SESSION_ENDED", "detail": "closing"}, "SESSION_ENDED", 410),
        (401, {"code": "UNAUTHORIZED", "detail": "token"}, "WORKER_UNAVAILABLE", 503),
        (503, {"code": "NOT_READY", "detail": "setup"}, "WORKER_UNAVAILABLE", 503),
        (502, None, "WORKER_UNAVAILABLE", 503),
    ],
)
def test_worker_problems_are_passed_on_or_made_ours(status: int, body: Any, code: str, http: int) -> None:
    problem = from_worker(status, body, "2" if code == "QUEUE_FULL" else None, "s-x")
    assert (problem.code, int(problem.status)) == (code, http)
    assert problem.body()["session_id"] == "s-x"
    if code == "QUEUE_FULL":
        assert problem.response().headers["Retry-After"] == "2"
    if code == "RUN_FAILED":
        assert problem.body()["error_type"] == "ValueError"  # the worker's errorType, snake_case
    if code == "SESSION_ENDED":
        assert "session not found" in problem.detail


class FakeReviews:
    """Stands in for the authentication and authorization APIs; counts the reviews asked."""

    def __init__(self, allowed: bool | set[str], delay: float = 0.0) -> None:
        self.allowed, self.calls, self.delay = allowed, 0, delay
        self.verbs: list[str] = []

    async def create_token_review(self, body: Any, **_: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)  # a round trip to the API server
        ok = body.spec.token == "good"
        user = SimpleNamespace(username="system:serviceaccount:ns:me", groups=["g"], uid="u", extra=None)
        return SimpleNamespace(
            status=SimpleNamespace(authenticated=ok, user=user, error=None if ok else "bad token")
        )

    async def create_subject_access_review(self, body: Any, **_: Any) -> Any:
        self.calls += 1
        attrs = body.spec.resource_attributes
        assert (attrs.group, attrs.resource) == ("kubesessions.io", "sessions")
        self.verbs.append(attrs.verb)
        allowed = self.allowed if isinstance(self.allowed, bool) else attrs.verb in self.allowed
        return SimpleNamespace(status=SimpleNamespace(allowed=allowed))


def auth_with(reviews: FakeReviews) -> KubernetesAuth:
    auth = KubernetesAuth.__new__(KubernetesAuth)
    auth.authn = auth.authz = reviews  # type: ignore[assignment]
    auth.ttl, auth.denied_ttl, auth.size, auth._cache, auth.hits, auth.misses = 10.0, 2.0, 8, {}, 0, 0
    auth.timeout = 10.0
    auth._reviews = {}
    return auth


async def test_calls_waiting_for_one_review_share_it_and_go_on_in_arrival_order() -> None:
    reviews = FakeReviews(allowed=True, delay=0.05)
    auth = auth_with(reviews)
    passed: list[int] = []

    async def call(i: int) -> None:
        identity = await auth.authenticate("good")
        await auth.authorize("good", identity, "ns", "get")
        passed.append(i)

    calls = []
    for i in range(5):  # they arrive one after another while the first one's review runs
        calls.append(asyncio.create_task(call(i)))
        await asyncio.sleep(0)
    await asyncio.gather(*calls)
    assert passed == [0, 1, 2, 3, 4]
    assert reviews.calls == 2  # one TokenReview and one SubjectAccessReview for all five
    assert not auth._reviews


async def test_auth_answers_are_cached_and_say_why() -> None:
    reviews = FakeReviews(allowed=True)
    auth = auth_with(reviews)
    for _ in range(5):
        identity = await auth.authenticate("good")
        assert identity.username == "system:serviceaccount:ns:me"
        await auth.authorize("good", identity, "ns", "create")
    assert reviews.calls == 2 and auth.hits == 8
    with pytest.raises(Problem) as err:
        await auth.authenticate(None)
    assert (err.value.code, int(err.value.status)) == ("UNAUTHORIZED", 401)
    with pytest.raises(Problem, match="bad token") as err:
        await auth.authenticate("bad")
    assert (err.value.code, int(err.value.status)) == ("UNAUTHORIZED", 401)


async def test_each_verb_is_asked_for_and_a_refused_one_is_forbidden() -> None:
    reviews = FakeReviews(allowed={"create"})
    auth = auth_with(reviews)
    identity = await auth.authenticate("good")
    await auth.authorize("good", identity, "ns", "create")
    refused: tuple[Verb, ...] = ("get", "list", "delete", "patch")
    for verb in refused:
        with pytest.raises(
            Problem, match=rf'may not {verb} sessions\.kubesessions\.io in namespace "ns"'
        ) as err:
            await auth.authorize("good", identity, "ns", verb)
        assert (err.value.code, int(err.value.status)) == ("FORBIDDEN", 403)
    assert reviews.verbs == ["create", "get", "list", "delete", "patch"]


async def test_cache_wait_wakes_on_the_keys_changes_only() -> None:
    cache = Cache(["ns"])
    key = ("ns", "s-1")

    def session(phase: str, version: int) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": "s-1", "resourceVersion": str(version)}
        return {"metadata": meta, "status": {"phase": phase}}

    def ready() -> str | None:
        body = cache.sessions.get(key)
        return "ready" if body and body["status"]["phase"] == "Ready" else None

    waiter = asyncio.create_task(cache.wait(key, ready, timeout=5))
    await asyncio.sleep(0)
    cache.seen("sessions", session("Starting", 2))
    await asyncio.sleep(0)
    assert not waiter.done()
    cache.seen("sessions", session("Ready", 3))
    assert await waiter == "ready"
    cache.seen("sessions", session("Starting", 2))  # a late, older event does not roll it back
    assert cache.sessions[key]["status"]["phase"] == "Ready"
    assert await cache.wait(("ns", "other"), lambda: None, timeout=0.05) is None
    assert not cache._changed


def test_openapi_documents_every_route_and_code() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    run = doc["paths"]["/v1/run"]["post"]
    assert {"200", "400", "401", "404", "410", "413", "429", "500", "503", "504"} <= set(run["responses"])
    schema = doc["components"]["schemas"]["RunRequest"]
    assert schema["required"] == ["input"]
    namespace = doc["paths"]["/v1/sessions/{id}"]["get"]["parameters"][2]["schema"]
    assert namespace == {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def test_openapi_says_what_is_accepted_and_links_a_new_session_to_its_operations() -> None:
    doc = openapi.document(("ns-a", "ns-b"), ("echo",))
    namespaces = [
        p for p in doc["paths"]["/v1/run"]["post"]["parameters"] if "namespace" in p["name"].lower()
    ]
    assert [p["schema"] for p in namespaces] == [{"type": "string", "enum": ["ns-a", "ns-b"]}] * 2
    create = doc["components"]["schemas"]["CreateSessionRequest"]["properties"]
    assert create["app"]["examples"] == ["echo"]
    assert create["session_timeout"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 3600}
    links = doc["paths"]["/v1/sessions"]["post"]["responses"]["201"]["links"]
    operations = {link["operationId"] for link in links.values()}
    assert operations == {"getSession", "keepaliveSession", "deleteSession"}
    ids = {op["operationId"] for path in doc["paths"].values() for op in path.values() if "operationId" in op}
    assert operations <= ids
    assert {"401", "403"} <= set(doc["paths"]["/v1/sessions"]["get"]["responses"])
    assert parse(RunRequest, b'{"input": 1, "session_timeout": 60.0}').session_timeout == 60


@pytest.fixture
async def sessions() -> AsyncIterator[Sessions]:
    async with ApiClient() as api:  # never called: the cache has the sessions
        yield Sessions(Cache(["ns"]), Kube(api), GatewaySettings(namespaces=["ns"], default_namespace="ns"))


def ns_session(phase: str, version: int, reason: str = "") -> dict[str, Any]:
    meta = {"namespace": "ns", "name": "s-1", "resourceVersion": str(version)}
    return {"metadata": meta, "status": {"phase": phase, "reason": reason}}


UNAVAILABLE = Problem("WORKER_UNAVAILABLE", "the worker of session s-1 cannot be reached")


async def test_an_unreachable_worker_whose_session_then_ends_is_reported_as_ended(sessions: Sessions) -> None:
    sessions.cache.seen("sessions", ns_session("Ready", 1))
    explained = asyncio.create_task(sessions.explain_unavailable("ns", "s-1", UNAVAILABLE))
    await asyncio.sleep(0)
    assert not explained.done()  # the worker is gone, its status not yet: wait for it
    sessions.cache.seen("sessions", ns_session("Expired", 2, "IdleTimeout"))
    problem = await explained
    assert (problem.code, problem.status) == ("SESSION_EXPIRED", 410)
    assert "session not found" in problem.detail


async def test_an_unreachable_worker_of_a_live_session_stays_unavailable(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kubesessions.gateway.sessions.ENDED_WAIT", 0.05)
    sessions.cache.seen("sessions", ns_session("Ready", 1))
    assert await sessions.explain_unavailable("ns", "s-1", UNAVAILABLE) is UNAVAILABLE


def test_live_figures_put_the_deadline_after_the_workers_last_activity() -> None:
    meta = {"namespace": "ns", "name": "s-1", "creationTimestamp": "2026-01-01T00:00:00Z"}
    status = {
        "phase": "Ready",
        "sessionTimeout": 60,
        "readyAt": "2026-01-01T00:00:10.000Z",
        "lastActivityTime": "2026-01-01T00:00:10.000Z",
        "expiresAt": "2026-01-01T00:01:10.000Z",
        "calls": 1,
    }
    body = {"metadata": meta, "spec": {"app": "echo"}, "status": status}
    shown = live(body, "2026-01-01T00:00:31.250Z", 4)
    assert (shown["last_activity"], shown["expires_at"], shown["calls"]) == (
        "2026-01-01T00:00:31.250Z",
        "2026-01-01T00:01:31.250Z",
        4,
    )
    early = live(body, "2026-01-01T00:00:02.000Z")  # the worker started before it was Ready
    assert (early["last_activity"], early["expires_at"], early["calls"]) == (
        "2026-01-01T00:00:10.000Z",
        "2026-01-01T00:01:10.000Z",
        1,
    )
    assert live(body, None) == view(body)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("t-1 2", True),
        ("x" * 200, True),
        (None, True),
        ("", False),
        (" a", False),
        ("x" * 201, False),
        ("caf\u00e9", False),
        ("a\tb", False),
    ],
)
def test_call_ids_are_checked_as_the_worker_checks_them(value: str | None, ok: bool) -> None:
    if ok:
        assert call_id(value) == value
    else:
        with pytest.raises(Problem, match=r"Idempotency-Key: must be 1\.\.200 printable ASCII") as err:
            call_id(value)
        assert int(err.value.status) == 400
