from __future__ import annotations

from typing import Any

import pytest

from kubesessions.kube.objects import cacheable, cacheable_pod, newer

pytestmark = pytest.mark.unit


def obj(version: str, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "resourceVersion": version}}


def test_an_older_watch_event_does_not_roll_back_our_own_write() -> None:
    assert not newer(obj("99"), obj("100"))
    assert newer(obj("100"), obj("100"))
    assert newer(obj("101"), obj("100"))


def test_a_new_object_of_the_same_name_always_wins() -> None:
    assert newer(obj("5", uid="u2"), obj("100"))
    assert newer(obj("5"), None)


def test_unparseable_versions_trust_the_event() -> None:
    assert newer(obj("abc"), obj("100"))


def test_cached_bodies_leave_out_managed_fields_and_the_event_body_stays_whole() -> None:
    event = {
        "metadata": {"name": "s", "uid": "u1", "managedFields": [{"manager": "kubesessions"}]},
        "status": {"phase": "Running"},
    }
    kept = cacheable(event)
    assert kept == {"metadata": {"name": "s", "uid": "u1"}, "status": {"phase": "Running"}}
    assert event["metadata"]["managedFields"] == [{"manager": "kubesessions"}]  # kopf's, untouched
    plain = {"metadata": {"name": "s"}}
    assert cacheable(plain) is plain  # nothing to leave out: no copy


def test_cached_pods_keep_of_their_spec_only_what_the_operator_reads() -> None:
    from kubesessions.control.decide.status import judge

    event = {
        "metadata": {"name": "w", "uid": "u1", "managedFields": [{"manager": "kubelet"}]},
        "spec": {"nodeName": "local-0", "containers": [{"name": "worker", "env": [{"name": "A"}]}]},
        "status": {"phase": "Pending"},
    }
    kept = cacheable_pod(event)
    assert kept == {
        "metadata": {"name": "w", "uid": "u1"},
        "spec": {"nodeName": "local-0", "containers": [{"name": "worker"}]},
        "status": {"phase": "Pending"},
    }
    assert event["spec"]["containers"][0]["name"] == "worker"  # kopf's body, untouched
    # What the operator decides from a pod is the same for the whole pod and the cached one.
    assert judge(kept, None) == judge(event, None)
    unscheduled = {**event, "spec": {"containers": []}}
    assert cacheable_pod(unscheduled)["spec"] == {}
    assert judge(cacheable_pod(unscheduled), None) == judge(unscheduled, None)


def test_a_cached_pod_keeps_the_memory_limit_an_oom_kill_names() -> None:
    """The kubelet node's OOMKilled worker read from the cache said "more memory than its node
    had left" when the spec was cut to nodeName: its limit is what the user must raise."""
    from kubesessions.control.decide.status import judge

    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    worker = {
        "name": "worker",
        "env": [{"name": "A"}],
        "resources": {"limits": {"memory": "64Mi", "cpu": "1"}},
    }
    event = {
        "metadata": {"name": "w"},
        "spec": {"nodeName": "local-0", "containers": [worker]},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "worker", "state": oom}]},
    }
    kept = cacheable_pod(event)
    assert kept["spec"]["containers"] == [{"name": "worker", "resources": {"limits": {"memory": "64Mi"}}}]
    verdict = judge(kept, "Ready")
    assert verdict == judge(event, "Ready")
    assert verdict.reason == "OutOfMemory" and "memory limit of 64Mi" in verdict.message
