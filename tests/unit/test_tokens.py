"""Issue 25, defect 9: session tokens derived from one key, so the gateway reads no Secret."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from kubesessions.api import tokens
from kubesessions.cli.runconfig import token_key
from kubesessions.control.decide import children
from kubesessions.gateway.cache import Cache
from kubesessions.gateway.sessions import GatewaySettings, Sessions

pytestmark = pytest.mark.unit
KEY = b"k" * 32


def test_the_gateway_derives_the_token_the_operator_writes() -> None:
    ref = children.SessionRef(name="s1", namespace="ns", uid="uid-1")
    written = children.build_secret(ref, "app", children.session_token(KEY, ref))
    sessions = Sessions(Cache([]), None, GatewaySettings(token_key=KEY))  # type: ignore[arg-type]
    derived = sessions.token({"metadata": {"namespace": "ns", "name": "s1", "uid": "uid-1"}})
    assert base64.b64decode(written["data"]["token"]).decode() == derived
    assert len(derived) == 43  # 256 bits, base64url without padding


@pytest.mark.parametrize(
    "other",
    [
        (KEY, "ns", "s1", "uid-2"),
        (KEY, "ns2", "s1", "uid-1"),
        (KEY, "ns", "s2", "uid-1"),
        (b"x" * 32, "ns", "s1", "uid-1"),
    ],
)
def test_each_session_and_each_key_gives_another_token(other: tuple[bytes, str, str, str]) -> None:
    assert tokens.session_token(*other) != tokens.session_token(KEY, "ns", "s1", "uid-1")
    # No field can be shifted into its neighbour.
    assert tokens.session_token(KEY, "a", "b\0c", "d") != tokens.session_token(KEY, "a\0b", "c", "d")


def test_the_key_comes_from_the_env_else_a_private_file_made_once(tmp_path: Path) -> None:
    assert token_key({"KUBESESSIONS_TOKEN_KEY": "from-the-chart"}, tmp_path) == b"from-the-chart"
    first = token_key({}, tmp_path)
    path = tmp_path / ".config" / "kube-sessions" / "token-key"
    assert path.read_bytes() == first and len(first) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_key({}, tmp_path) == first  # the operator and the gateway agree
    assert [p.name for p in path.parent.iterdir()] == ["token-key"]
    assert token_key({"XDG_CONFIG_HOME": str(tmp_path / "x")}, tmp_path) != first
