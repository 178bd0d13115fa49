"""The gateway's part in exactly-once calls: a new session named after the call id that started it."""

from __future__ import annotations

import pytest

from kubesessions.gateway.problems import Problem
from kubesessions.gateway.requests import SESSION_ID, new_session_id

pytestmark = pytest.mark.unit


def test_a_session_named_after_a_call_id_is_the_same_on_every_retry() -> None:
    seed = "ns/alice/0f3c"
    assert new_session_id(seed) == new_session_id(seed), "a retry finds the session its first try made"
    assert SESSION_ID.match(new_session_id(seed)), "a valid session id (and DNS-1123 name)"


def test_call_ids_of_other_callers_or_calls_name_other_sessions() -> None:
    names = {new_session_id(seed) for seed in ("ns/alice/k1", "ns/alice/k2", "ns/bob/k1", "other/alice/k1")}
    assert len(names) == 4


def test_without_a_call_id_every_session_is_new() -> None:
    assert new_session_id() != new_session_id()
    assert SESSION_ID.match(new_session_id())


def test_json_nested_deeper_than_the_parser_goes_is_a_validation_error() -> None:
    from kubesessions.gateway.requests import RunRequest, parse

    with pytest.raises(Problem, match="the body is not JSON") as err:
        parse(RunRequest, b"[" * 20_000 + b"]" * 20_000)
    assert err.value.code == "VALIDATION"


def test_json_the_fast_parser_refuses_is_taken_as_the_standard_library_takes_it() -> None:
    from kubesessions.gateway.requests import RunRequest, parse

    # orjson refuses both; JSON allows any integer, and the gateway took NaN before it used orjson.
    body = parse(RunRequest, b'{"input": {"big": 123456789012345678901234567890, "x": NaN}}')
    assert body.input["big"] == 123456789012345678901234567890
    assert body.input["x"] != body.input["x"]  # NaN
    with pytest.raises(Problem, match="the body is not JSON: Expecting value") as err:
        parse(RunRequest, b'{"input": }')
    assert err.value.code == "VALIDATION"
