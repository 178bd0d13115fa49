"""Where the client's bearer token comes from: a string, a callable, the environment, or the pod."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# A token provider is called before each request, so rotating tokens are picked up.
TokenProvider = Callable[[], str | None]
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class ServiceAccountToken:
    """The pod's projected service-account token; re-read when the kubelet rotates the file."""

    def __init__(self, path: Path = SERVICE_ACCOUNT_TOKEN) -> None:
        self.path = path
        self._mtime = -1.0
        self._token: str | None = None

    def __call__(self) -> str | None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None
        if mtime != self._mtime:
            self._token, self._mtime = self.path.read_text().strip(), mtime
        return self._token


def static(token: str | None) -> TokenProvider:
    return lambda: token


def default_provider() -> TokenProvider:
    """``KUBESESSIONS_GATEWAY_TOKEN`` if set, else the pod's service-account token if there is one."""
    if os.environ.get("KUBESESSIONS_GATEWAY_TOKEN"):
        return lambda: os.environ.get("KUBESESSIONS_GATEWAY_TOKEN")
    return ServiceAccountToken()


def resolve(token: str | TokenProvider | None) -> TokenProvider:
    if token is None:
        return default_provider()
    if isinstance(token, str):
        return static(token)
    return token
