"""The warm pool's pure decisions: the pool worker, what to create or delete, who may claim."""

from __future__ import annotations

import pytest

from kubesessions.api import names
from kubesessions.api.models import AppSpec, PoolStrategy, SessionSpec, WarmPoolStatus
from kubesessions.control.decide import children, pool
from kubesessions.control.poolmetrics import PoolMetrics

pytestmark = pytest.mark.unit

APP = AppSpec.model_validate(
    {"image": "worker:1", "entrypoint": "m:C", "warmPool": {"size": 2}, "resources": {"cpu": "1"}}
)
CURRENT = pool.template_hash(APP)


def member(
    name: str, *, ready: bool = True, template: str = CURRENT, deleting: bool = False, ended: bool = False
) -> pool.Member:
    return pool.Member(
        name=name,
        resource_version="7",
        template=template,
        ready=ready,
        deleting=deleting,
        ended=ended,
        created=f"2030-01-01T00:00:0{name[-1]}Z",
        ip="127.0.0.9",
    )


def test_pool_worker_is_the_apps_worker_owned_by_the_app_with_the_pool_token() -> None:
    pod = pool.build_pod("ns", "model", "app-uid", APP, idle_grace=60)
    meta = pod["metadata"]
    assert meta["name"].startswith("model-pool-")
    assert meta["labels"] == {
        names.MANAGED_BY: names.MANAGER,
        names.APP_LABEL: "model",
        names.POOL_LABEL: "model",
    }
    assert [(o["kind"], o["name"], o["uid"]) for o in meta["ownerReferences"]] == [
        ("App", "model", "app-uid")
    ]
    assert meta["annotations"] == {names.TEMPLATE_HASH: CURRENT, names.SETUP_TIMEOUT_ANNOTATION: "600"}
    env = pod["spec"]["containers"][0]["env"]
    secrets = [
        e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert secrets == ["model-pool-token"]  # no session token anywhere
    assert {"name": names.POOL_ENV, "value": "true"} in env
    assert pool.build_pod("ns", "model", "app-uid", APP, idle_grace=60)["metadata"]["name"] != meta["name"]


def test_template_hash_ignores_the_pool_settings_only() -> None:
    resized = APP.model_copy(update={"warmPool": None})
    assert pool.template_hash(resized) == CURRENT
    assert pool.template_hash(APP.model_copy(update={"image": "worker:2"})) != CURRENT


def test_plan_fills_to_size_and_trims_starting_then_newest() -> None:
    assert pool.plan(2, PoolStrategy.RECREATE, CURRENT, []) == pool.Plan(create=2, delete=())
    assert pool.plan(
        2, PoolStrategy.RECREATE, CURRENT, [member("a1"), member("a2", deleting=True)]
    ) == pool.Plan(create=1, delete=())
    three = [member("a1"), member("a2", ready=False), member("a3")]
    assert pool.plan(1, PoolStrategy.RECREATE, CURRENT, three) == pool.Plan(create=0, delete=("a2", "a3"))
    assert pool.plan(0, PoolStrategy.RECREATE, CURRENT, three).delete == ("a2", "a3", "a1")


def test_ended_workers_go_and_are_replaced() -> None:
    members = [member("a1", ended=True, ready=False), member("a2"), member("a3", ended=True, deleting=True)]
    assert pool.plan(2, PoolStrategy.RECREATE, CURRENT, members) == pool.Plan(create=1, delete=("a1",))
    assert [m.name for m in pool.candidates(PoolStrategy.RECREATE, CURRENT, members)] == ["a2"]


def test_app_change_recreate_replaces_at_once_on_use_keeps_until_used() -> None:
    old = [member("a1", template="old"), member("a2", template="old")]
    assert pool.plan(2, PoolStrategy.RECREATE, CURRENT, old) == pool.Plan(create=2, delete=("a1", "a2"))
    assert pool.plan(2, PoolStrategy.ON_USE, CURRENT, old) == pool.Plan(create=0, delete=())
    assert pool.candidates(PoolStrategy.RECREATE, CURRENT, old) == []
    assert [m.name for m in pool.candidates(PoolStrategy.ON_USE, CURRENT, old)] == ["a1", "a2"]


def test_candidates_are_ready_live_workers_oldest_first() -> None:
    members = [member("a3"), member("a1", ready=False), member("a2"), member("a4", deleting=True)]
    assert [m.name for m in pool.candidates(PoolStrategy.RECREATE, CURRENT, members)] == ["a2", "a3"]


@pytest.mark.parametrize(
    ("spec", "refused"),
    [
        ({"app": "model"}, None),
        ({"app": "model", "sessionTimeout": 5}, None),
        ({"app": "model", "template": {"image": "worker:1"}}, None),  # the App's own, restated
        ({"app": "model", "config": {"k": 1}}, "config"),
        ({"app": "model", "template": {"image": "worker:2"}}, "template"),
        ({"app": "model", "template": {"resources": {"gpu": 1}}}, "template"),
        ({"app": "model", "template": {"env": [{"name": "A", "value": "1"}]}}, "template"),
    ],
)
def test_claim_refusal_names_what_the_pool_worker_lacks(spec: dict[str, object], refused: str | None) -> None:
    reason = pool.claim_refusal(APP, SessionSpec.model_validate(spec))
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


def test_claim_patch_is_conditional_and_moves_the_worker_to_the_session() -> None:
    ref = children.SessionRef(name="s1", namespace="ns", uid="s-uid")
    patch = pool.claim_patch(member("a1"), ref, "2030-01-01T00:00:00.000Z")["metadata"]
    assert patch["resourceVersion"] == "7"
    assert patch["labels"] == {names.POOL_LABEL: None, names.SESSION_LABEL: "s1"}
    assert patch["ownerReferences"] == [children.owner_reference(ref)]
    pod = {"metadata": {"annotations": patch["annotations"]}}
    assert pool.claimed_at(pod, "s-uid") == "2030-01-01T00:00:00.000Z"
    assert pool.claimed_at(pod, "other") is None
    assert pool.claimed_at(None, "s-uid") is None


def test_member_and_status_count_ready_and_starting() -> None:
    ready = {
        "metadata": {"name": "a1", "resourceVersion": "3", "annotations": {names.TEMPLATE_HASH: CURRENT}},
        "status": {"podIP": "127.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    starting = {"metadata": {"name": "a2"}, "status": {"phase": "Pending"}}
    done = {"metadata": {"name": "a3"}, "status": {"phase": "Failed"}}
    orphaned = {"metadata": {"name": "a4"}, "status": {"phase": "Succeeded"}}  # its clean self-exit
    members = [pool.member(p) for p in (ready, starting, done, orphaned)]
    assert [(m.ready, m.ended, m.failed) for m in members] == [
        (True, False, False),
        (False, False, False),
        (False, True, True),
        (False, True, False),
    ]
    assert pool.status("model", 2, members[:3], claimed=5) == WarmPoolStatus(
        size=2, ready=1, starting=1, claimed=5, selector=pool.selector("model")
    )


def test_metrics_render_per_app_counts_and_a_cumulative_histogram() -> None:
    metrics = PoolMetrics()
    metrics.observe_pool(("ns", "model"), WarmPoolStatus(size=2, ready=1))
    metrics.hit(("ns", "model"), 0.007)
    metrics.hit(("ns", "model"), 0.3)
    metrics.miss(("ns", "model"))
    text = "\n".join(metrics.lines())
    labels = 'namespace="ns",app="model"'
    assert f"kubesessions_pool_size{{{labels}}} 2" in text
    assert f"kubesessions_pool_ready{{{labels}}} 1" in text
    assert f'kubesessions_pool_claims_total{{{labels},result="hit"}} 2' in text
    assert f'kubesessions_pool_claims_total{{{labels},result="miss"}} 1' in text
    assert f'kubesessions_pool_claim_seconds_bucket{{{labels},le="0.01"}} 1' in text
    assert f'kubesessions_pool_claim_seconds_bucket{{{labels},le="+Inf"}} 2' in text
    assert f"kubesessions_pool_claim_seconds_count{{{labels}}} 2" in text


def test_the_upkeep_waits_a_moment_after_a_claim_and_no_longer_under_a_stream_of_claims() -> None:
    assert pool.refill_pause(None, now=100.0) is None  # no claim since the last upkeep
    assert pool.refill_pause(100.0, now=100.0) == pool.REFILL_PAUSE
    assert pool.refill_pause(100.0, now=100.2) == pytest.approx(pool.REFILL_PAUSE - 0.2)
    # Counted from the first claim not yet acted on: later claims do not push it further.
    assert pool.refill_pause(100.0, now=100.0 + pool.REFILL_PAUSE) is None


def test_unclaimed_workers_are_looked_at_well_within_their_orphan_window() -> None:
    """A pool worker exits when nobody looked at it for the App's timeout plus the idle grace:
    the operator looks three times as often, a new ready worker at once."""
    app = APP.model_copy(update={"defaultSessionTimeout": 300})
    assert pool.look_interval("model", app, idle_grace=60) == 120.0
    members = [member("a1"), member("a2"), member("a3", ready=False), member("a4", deleting=True)]
    assert pool.looks_due(members, {}, 120.0, now=1000.0) == (["a1", "a2"], 120.0)
    assert pool.looks_due(members, {"a1": 950.0, "a2": 1000.0}, 120.0, now=1000.0) == ([], 70.0)
    assert pool.looks_due(members, {"a1": 870.0, "a2": 990.0}, 120.0, now=1000.0) == (["a1"], 110.0)
    assert pool.looks_due([member("a3", ready=False)], {}, 120.0, now=1000.0) == ([], None)
