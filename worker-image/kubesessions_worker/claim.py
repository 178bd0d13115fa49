"""A warm pool worker: started with its App's pool token and no session, until the operator
claims it for one (``POST /claim``). From then on it is that session's worker like any other:
the session's id and token, its idle timeout, its idle clock starting at the claim; the pool
token no longer opens it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from dataclasses import dataclass, field

from aiohttp import web

from .problems import Problem
from .runner import Runner

log = logging.getLogger(__name__)

# What an unclaimed pool worker answers besides the probes: the claim, and the operator's looks
# (a keepalive from the operator is what keeps an unclaimed worker from its orphan exit).
UNCLAIMED_PATHS = frozenset({"/claim", "/status", "/metrics", "/keepalive"})
SESSION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MIN_TOKEN = 16


@dataclass
class Credential:
    """The bearer token every call but the probes must carry; a claim replaces it."""

    value: bytes = field(repr=False)

    def matches(self, given: str) -> bool:
        # compare_digest: the time taken must not reveal how much of the token matched.
        return hmac.compare_digest(given.encode(), self.value)


@dataclass
class Slot:
    """Whether this worker still waits in its pool, and for whom it was claimed."""

    pooled: bool
    session: str | None = None
    claimed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.pooled:
            self.claimed.set()  # a worker started for its session is its own from the start


SLOT = web.AppKey("slot", Slot)
CREDENTIAL = web.AppKey("credential", Credential)
RUNNER = web.AppKey("claim_runner", Runner)


def install(app: web.Application, runner: Runner, slot: Slot, credential: Credential) -> None:
    app[SLOT] = slot
    app[CREDENTIAL] = credential
    app[RUNNER] = runner
    if slot.pooled:
        app.router.add_post("/claim", _claim)


def check_claimed(request: web.Request) -> None:
    if not request.app[SLOT].claimed.is_set() and request.path not in UNCLAIMED_PATHS:
        raise Problem("NOT_READY", "this worker waits in its App's warm pool: no session has claimed it")


async def _claim(request: web.Request) -> web.Response:
    """``{"session", "token", "sessionTimeout"}``, authorised by the pool token. Repeating the
    claim that took the worker (authorised by the session's token by then) answers the same:
    an operator restarted mid-claim finishes it."""
    session, token, timeout = _parse(await request.read())
    slot, credential, runner = request.app[SLOT], request.app[CREDENTIAL], request.app[RUNNER]
    if slot.session is not None:
        if slot.session == session and credential.matches(token):
            return web.json_response({"sessionId": session, "claimed": True})
        raise Problem("CLAIMED", "this worker already belongs to another session")
    if not runner.claimed(session, timeout):  # not ready (or ending): no session can have it
        raise Problem("NOT_READY", f"the worker is {runner.state}, not ready to be claimed")
    slot.session = session
    credential.value = token.encode()
    slot.claimed.set()
    _tag_logs(session)
    log.info("claimed from the warm pool for session %s", session, extra={"session": session})
    return web.json_response({"sessionId": session, "claimed": True})


def _parse(raw: bytes) -> tuple[str, str, int]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise Problem("VALIDATION", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Problem("VALIDATION", 'the body must be {"session", "token", "sessionTimeout"}')
    session, token, timeout = body.get("session"), body.get("token"), body.get("sessionTimeout")
    if not isinstance(session, str) or not SESSION_NAME.match(session):
        raise Problem("VALIDATION", "session must be a Session's name (a DNS-1123 subdomain)")
    if not isinstance(token, str) or len(token) < MIN_TOKEN:
        raise Problem("VALIDATION", f"token must be a string of at least {MIN_TOKEN} characters")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise Problem("VALIDATION", f"sessionTimeout must be whole seconds in 1..3600, got {timeout!r}")
    return session, token, timeout


def _tag_logs(session: str) -> None:
    """Log lines from now on name the session (see logs.SessionFilter)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if hasattr(found, "session"):
                found.session = session
