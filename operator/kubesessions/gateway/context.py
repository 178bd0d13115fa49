"""What a gateway request handler reads from its app and request: shared by the API and the compat routes."""

from __future__ import annotations

from aiohttp import web

from .auth import Authorizer, Identity
from .cache import Cache
from .calls import Calls
from .forward import Forwarder
from .metrics import Metrics
from .problems import Problem
from .sessions import GatewaySettings, Sessions

SETTINGS = web.AppKey("settings", GatewaySettings)
CACHE = web.AppKey("cache", Cache)
SESSIONS = web.AppKey("sessions", Sessions)
FORWARDER = web.AppKey("forwarder", Forwarder)
CALLS = web.AppKey("calls", Calls)
AUTH = web.AppKey("auth", Authorizer)
METRICS = web.AppKey("metrics", Metrics)
IDENTITY = "kubesessions.identity"
NS = "kubesessions.namespace"


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def served(settings: GatewaySettings, namespace: str) -> None:
    if settings.namespaces and namespace not in settings.namespaces:
        raise Problem(
            "VALIDATION",
            f'namespace "{namespace}" is not served by this gateway (it serves: '
            f"{', '.join(settings.namespaces)})",
        )


async def authorize(request: web.Request, namespace: str) -> Identity:
    """The caller's identity in ``namespace``: the middleware checked the request's own namespace,
    so only a request that turns out to act elsewhere (an SDK app ref, a session found by id) costs a check."""
    if namespace == request[NS]:
        identity: Identity = request[IDENTITY]
        return identity
    served(request.app[SETTINGS], namespace)
    return await request.app[AUTH].check(bearer(request), namespace)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Problem(
            "PAYLOAD_TOO_LARGE", f"the body is over the limit of {request.app[SETTINGS].max_body_bytes} bytes"
        ) from None
