"""What a gateway request handler reads from its app and request: shared by the API and the compat routes."""

from __future__ import annotations

from aiohttp import web

from kubesessions.gateway.auth import Authorizer, Identity, Verb
from kubesessions.gateway.cache import Cache
from kubesessions.gateway.calls import Calls
from kubesessions.gateway.forward import Forwarder
from kubesessions.gateway.metrics import Metrics
from kubesessions.gateway.problems import Problem
from kubesessions.gateway.sessions import GatewaySettings, Sessions

SETTINGS = web.AppKey("settings", GatewaySettings)
CACHE = web.AppKey("cache", Cache)
SESSIONS = web.AppKey("sessions", Sessions)
FORWARDER = web.AppKey("forwarder", Forwarder)
CALLS = web.AppKey("calls", Calls)
AUTH = web.AppKey("auth", Authorizer)
METRICS = web.AppKey("metrics", Metrics)
IDENTITY = "kubesessions.identity"
NS = "kubesessions.namespace"
NS_GIVEN = "kubesessions.namespace_given"  # the caller named it (else the default)


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


async def authorize(request: web.Request, namespace: str, verb: Verb) -> Identity:
    """The caller's identity, once it may ``verb`` sessions in ``namespace`` (403 FORBIDDEN if not).
    The middleware has authenticated the caller; each handler asks for the verb it performs."""
    served(request.app[SETTINGS], namespace)
    identity: Identity = request[IDENTITY]
    await request.app[AUTH].authorize(bearer(request) or "", identity, namespace, verb)
    return identity


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Problem(
            "PAYLOAD_TOO_LARGE", f"the body is over the limit of {request.app[SETTINGS].max_body_bytes} bytes"
        ) from None
