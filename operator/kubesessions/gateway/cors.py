"""Cross-origin callers (a browser running the JavaScript SDK): off unless origins are allowed.

A gateway started with ``--cors-origin https://app.example`` (repeatable; ``*`` for any origin)
answers a browser's preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
from an allowed origin with 204 and the ``Access-Control-Allow-*`` headers, before any token is
asked for (a browser sends none with a preflight), and puts ``Access-Control-Allow-Origin`` on
every answer to such an origin, streams and errors included. A preflight from any other origin
gets 403 and no allow header, so the browser refuses the call. Credentials (cookies) are never
allowed: the SDK sends its API key as a bearer token and leaves cookies out.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from kubesessions.api.names import CALL_ID_HEADER
from kubesessions.gateway.problems import Problem

ANY = "*"
# An origin as a browser sends it: scheme, host, optional port; no path.
ORIGIN = re.compile(r"^https?://[^/\s?#]+$")
METHODS = "GET, POST, DELETE, OPTIONS"
# What a browser script may read of an answer beyond the CORS-safelisted headers.
EXPOSED = ", ".join(("Retry-After", "WWW-Authenticate", CALL_ID_HEADER))
MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer

ORIGINS = web.AppKey[frozenset[str]]("cors_origins")


def check_origin(text: str) -> str:
    """An allowed origin as given to ``--cors-origin``: ``*`` or ``scheme://host[:port]``."""
    origin = text.rstrip("/")  # a browser's Origin has no trailing slash
    if origin != ANY and not ORIGIN.match(origin):
        raise ValueError(
            f'--cors-origin: "{text}" is not an origin: give scheme://host[:port] (no path), or * for any'
        )
    return origin


def install(app: web.Application, origins: list[str]) -> None:
    """Answer preflights first (before auth); mark answers to allowed origins as they are sent."""
    app[ORIGINS] = frozenset(origins)
    app.middlewares.insert(0, _preflight)
    app.on_response_prepare.append(_allow)


def _allowed(request: web.Request) -> str | None:
    """The request's Origin if this gateway allows it."""
    origin = request.headers.get("Origin")
    origins = request.app[ORIGINS]
    if origin is None or not origins:
        return None
    return origin if ANY in origins or origin in origins else None


@web.middleware
async def _preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    ):
        return await handler(request)
    origin = _allowed(request)
    if origin is None:
        origins = request.app[ORIGINS]
        allowed = ", ".join(sorted(origins)) or "none"
        return Problem(
            "FORBIDDEN",
            f'cross-origin requests from "{request.headers["Origin"]}" are not allowed '
            f"(allowed origins: {allowed}; see the gateway's --cors-origin)",
        ).response()
    headers = {
        "Access-Control-Allow-Methods": METHODS,
        "Access-Control-Max-Age": MAX_AGE,
    }
    # Any request header the caller's script sets: the bearer token is the only credential.
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        headers["Access-Control-Allow-Headers"] = asked
    return web.Response(status=204, headers=headers)


async def _allow(request: web.Request, response: web.StreamResponse) -> None:
    origin = _allowed(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
    if request.app[ORIGINS]:
        response.headers.add("Vary", "Origin")  # the answer depends on who asks
