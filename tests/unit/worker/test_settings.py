"""Settings: the operator's environment, flags on top, and checks that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubesessions_worker.settings import Settings, SettingsError

pytestmark = pytest.mark.unit

ENV = {"SESSION_ID": "s1", "KUBESESSIONS_APP": "pkg.mod:App", "KUBESESSIONS_SESSION_TOKEN": "t0ken"}


def test_defaults_follow_the_contract() -> None:
    s = Settings.load([], ENV)
    assert (s.session_id, s.app, s.token) == ("s1", "pkg.mod:App", "t0ken")
    assert (s.session_timeout, s.host, s.port, s.queue_size) == (60, "0.0.0.0", 8080, 16)
    assert (s.call_timeout, s.idle_grace, s.pool) == (600, 60, False)
    assert s.termination_message_path == Path("/dev/termination-log")
    assert s.config == {}


def test_environment_then_flags() -> None:
    env = {
        **ENV,
        "SESSION_TIMEOUT": "30",
        "KUBESESSIONS_CONFIG": '{"size": 10}',
        "POD_IP": "10.1.2.3",
        "KUBESESSIONS_PORT": "9000",
        "KUBESESSIONS_QUEUE_SIZE": "4",
        "KUBESESSIONS_CALL_TIMEOUT": "0",
        "KUBESESSIONS_IDLE_GRACE": "5",
        "KUBESESSIONS_TERMINATION_MESSAGE_PATH": "/tmp/term",
    }
    s = Settings.load([], env)
    assert (s.session_timeout, s.config, s.host, s.port, s.queue_size) == (
        30,
        {"size": 10},
        "10.1.2.3",
        9000,
        4,
    )
    assert (s.call_timeout, s.idle_grace, s.termination_message_path) == (0, 5, Path("/tmp/term"))
    s = Settings.load(
        ["--port", "0", "--session-timeout", "7", "--app", "other:App", "--queue-size", "0"], env
    )
    assert (s.port, s.session_timeout, s.app, s.queue_size) == (0, 7, "other:App", 0)


def test_the_session_token_has_its_own_name_not_the_clients() -> None:
    env = {"SESSION_ID": "s1", "KUBESESSIONS_APP": "pkg.mod:App", "KUBESESSIONS_GATEWAY_TOKEN": "g"}
    with pytest.raises(SettingsError, match="KUBESESSIONS_SESSION_TOKEN"):
        Settings.load([], env)


def test_the_token_is_not_in_the_repr() -> None:
    assert "t0ken" not in repr(Settings.load([], ENV))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"KUBESESSIONS_SESSION_TOKEN": ""}, "KUBESESSIONS_SESSION_TOKEN"),
        ({"SESSION_ID": ""}, "SESSION_ID"),
        ({"KUBESESSIONS_APP": "no_class_here"}, "package.module:Class"),
        ({"SESSION_TIMEOUT": "0"}, "1..3600"),
        ({"SESSION_TIMEOUT": "3601"}, "1..3600"),
        ({"SESSION_TIMEOUT": "1.5"}, "must be a number"),
        ({"KUBESESSIONS_CONFIG": "[1]"}, "JSON object"),
        ({"KUBESESSIONS_CONFIG": "{"}, "not JSON"),
        ({"KUBESESSIONS_QUEUE_SIZE": "-1"}, "KUBESESSIONS_QUEUE_SIZE"),
        ({"KUBESESSIONS_PORT": "70000"}, "KUBESESSIONS_PORT"),
    ],
)
def test_bad_settings_say_what_is_wrong(change: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        Settings.load([], {**ENV, **change})
