"""A Session's children are its own by ownerReference, never by name: an object someone else
made under a name it needs is neither adopted nor changed nor deleted (issue 25, defect 2)."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.control.act.children import DELETED, GONE, NOT_OURS, Children, NameConflict
from kubesessions.control.decide import children
from kubesessions.control.settings import OperatorSettings
from kubesessions.control.state import Tracked
from kubesessions.kube.kubeapi import Kube

pytestmark = pytest.mark.unit
REF = children.SessionRef(name="postgres", namespace="ns", uid="session-uid")


class FakeKube:
    """Objects by path, with uids; DELETE honours a uid precondition as the API server does."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.uids = (f"uid-{n}" for n in itertools.count())
        self.deleted: list[str] = []

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = {**body["metadata"], "uid": next(self.uids), "namespace": "ns"}
        self.objects[path] = obj = {**body, "metadata": meta}
        return obj

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = f"{path}/{body['metadata']['name']}"
        if name in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        return self.put(name, body)

    async def get(self, path: str) -> dict[str, Any]:
        if path not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        return self.objects[path]

    async def delete(self, path: str, uid: str | None = None) -> dict[str, Any]:
        if path not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        if uid is not None and self.objects[path]["metadata"]["uid"] != uid:
            raise ApiException(status=409, reason="Precondition failed: UID")
        self.deleted.append(path)
        return self.objects.pop(path)


def parts() -> tuple[Children, FakeKube]:
    kube = FakeKube()
    return Children(cast(Kube, kube), OperatorSettings(network_policy=None)), kube


SERVICE = "/api/v1/namespaces/ns/services/postgres"
SECRET = "/api/v1/namespaces/ns/secrets/postgres-token"
POD = "/api/v1/namespaces/ns/pods/postgres"


async def test_a_hand_made_service_of_the_sessions_name_is_a_conflict_naming_it_and_is_left_alone() -> None:
    parts_, kube = parts()
    theirs = kube.put(SERVICE, {"metadata": {"name": "postgres"}, "spec": {"ports": [{"port": 5432}]}})
    tracked = Tracked(uid=REF.uid)
    with pytest.raises(NameConflict) as err:
        await parts_.ensure_access(("ns", "postgres"), REF, "app", tracked)
    assert 'Service "postgres" already exists in namespace ns and is not this Session\'s' in str(err.value)
    assert "owned by nobody" in str(err.value) and not err.value.passing
    # The Secret it created is its own and recorded as such; the Service is not.
    assert set(tracked.children) == {"secret"}
    await parts_.delete(("ns", "postgres"), REF.uid, tracked)
    assert kube.objects[SERVICE] is theirs
    assert kube.deleted == [SECRET]


async def test_objects_owned_by_another_session_are_a_conflict_that_may_be_passing() -> None:
    parts_, kube = parts()
    # An earlier Session of the same name is gone: the garbage collector deletes its children.
    earlier = {"kind": "Session", "name": "postgres", "uid": "an-earlier-session"}
    kube.put(SERVICE, {"metadata": {"name": "postgres", "ownerReferences": [earlier]}})
    kube.put(SECRET, {"metadata": {"name": "postgres-token", "deletionTimestamp": "now"}})
    with pytest.raises(NameConflict) as err:
        await parts_.ensure_access(("ns", "postgres"), REF, "app", Tracked(uid=REF.uid))
    assert len(err.value.reasons) == 2 and err.value.passing
    assert 'Secret "postgres-token"' in str(err.value) and "(uid an-earlier-session)" in str(err.value)
    # Another Session's (another name) stays: that is a conflict for good.
    other = {"kind": "Session", "name": "mysql", "uid": "u"}
    kube.objects[SERVICE]["metadata"]["ownerReferences"] = [other]
    with pytest.raises(NameConflict) as err:
        await parts_.ensure_access(("ns", "postgres"), REF, "app", Tracked(uid=REF.uid))
    assert not err.value.passing


async def test_its_own_children_found_existing_count_as_made() -> None:
    parts_, kube = parts()
    mine = kube.put(SECRET, children.build_secret(REF, "app", "t" * 32))
    tracked = Tracked(uid=REF.uid, token="another")
    await parts_.ensure_access(("ns", "postgres"), REF, "app", tracked)
    assert tracked.children["secret"] == mine["metadata"]["uid"]
    assert tracked.token is None  # the existing Secret's token stands


async def test_delete_leaves_whatever_is_not_the_sessions_own() -> None:
    parts_, kube = parts()
    kube.put(POD, {"metadata": {"name": "postgres", "labels": children.labels(REF, "app")}})  # labels alone
    kube.put(SERVICE, {"metadata": {"name": "postgres"}})
    mine = kube.put(SECRET, children.build_secret(REF, "app", "t" * 32))
    await parts_.delete(("ns", "postgres"), REF.uid, None)
    assert set(kube.objects) == {POD, SERVICE}
    assert kube.deleted == [SECRET] and mine["metadata"]["uid"]


async def test_a_known_uid_is_the_delete_precondition_and_a_replaced_object_is_read_first() -> None:
    parts_, kube = parts()
    mine = kube.put(SERVICE, children.build_service(REF, "app"))
    assert (
        await parts_.delete_owned("ns", "services", "postgres", REF.uid, mine["metadata"]["uid"]) == DELETED
    )
    assert await parts_.delete_owned("ns", "services", "postgres", REF.uid) == GONE
    # The Session's Service went and someone else's took its name: a stale uid deletes nothing.
    kube.put(SERVICE, {"metadata": {"name": "postgres"}})
    assert (
        await parts_.delete_owned("ns", "services", "postgres", REF.uid, mine["metadata"]["uid"]) == NOT_OURS
    )
    assert SERVICE in kube.objects
