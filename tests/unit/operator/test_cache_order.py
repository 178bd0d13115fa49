from __future__ import annotations

from typing import Any

import pytest

from kubesessions.kubeobjects import newer

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
