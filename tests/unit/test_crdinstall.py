"""How `kubesessions crds --apply` reads a CRD's conditions (the apply itself runs against the
real API server in the README test and `make demo`)."""

from __future__ import annotations

import pytest

from kubesessions.kube.crdinstall import established, not_established_reason

pytestmark = pytest.mark.unit

NEW = {"metadata": {"name": "sessions.kubesessions.io"}, "status": {"conditions": None}}
NAMED = {
    "metadata": {"name": "sessions.kubesessions.io"},
    "status": {
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "message": "no conflicts found"},
            {"type": "Established", "status": "False", "message": "not all names are accepted"},
        ]
    },
}
SERVED = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}


def test_a_crd_without_conditions_is_not_established_and_says_so() -> None:
    # kubectl wait fails on exactly this object (conditions: null); --apply keeps waiting.
    assert not established(NEW)
    assert not established({"metadata": {}})
    assert not_established_reason(NEW) == "no conditions yet"


def test_established_only_when_the_condition_is_true() -> None:
    assert not established(NAMED)
    assert established(SERVED)


def test_the_reason_lists_every_condition() -> None:
    assert not_established_reason(NAMED) == (
        "NamesAccepted=True (no conflicts found); Established=False (not all names are accepted)"
    )
