"""JSON log lines name the object they are about, also when kopf wrote them."""

from __future__ import annotations

import json
import logging

import pytest

from kubesessions.common.logs import JsonFormatter, setup

pytestmark = pytest.mark.unit


def line(**extra: object) -> dict[str, object]:
    record = logging.LogRecord("kopf.objects", logging.WARNING, __file__, 1, "it %s", ("failed",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_kopf_lines_about_a_session_carry_its_name_and_namespace() -> None:
    out = line(k8s_ref={"kind": "Session", "name": "s1", "namespace": "team-a", "uid": "u"})
    assert (out["session"], out["namespace"], out["message"]) == ("s1", "team-a", "it failed")


def test_kopf_lines_about_other_kinds_name_the_kind() -> None:
    out = line(k8s_ref={"kind": "Pod", "name": "s1", "namespace": "team-a"})
    assert (out["pod"], out["namespace"]) == ("s1", "team-a")
    assert "session" not in out


def test_our_own_fields_are_kept() -> None:
    out = line(session="s2", namespace="b")
    assert (out["session"], out["namespace"], out["level"]) == ("s2", "b", "warning")


@pytest.mark.parametrize(
    ("message", "level"),
    [
        (
            "Request attempt #1/9 failed; will retry: GET https://127.0.0.1:1/apis/kubesessions.io/v1alpha1/apps"
            " -> APITooManyRequestsError('storage is (re)initializing', {})",
            "warning",
        ),
        ("Request attempt #1/9 failed; will retry: GET https://x -> APIServerError('boom', {})", "error"),
        (
            "Request attempt #9/9 failed; escalating: GET https://x -> APITooManyRequestsError('x', {})",
            "error",
        ),
    ],
)
def test_a_retried_429_from_kopf_is_a_warning_not_an_error(
    message: str, level: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level_before = root.handlers[:], root.level
    try:
        setup(json_lines=True)
        logging.getLogger("kopf._cogs.clients.watching").error(message)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level_before)
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["level"] == level
