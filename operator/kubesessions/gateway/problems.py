"""The gateway's errors as RFC 9457 problem details, each with a stable ``code``."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException

PROBLEM_TYPE = "application/problem+json"

# code -> default HTTP status, published in the OpenAPI document (openapi.py). VALIDATION is 422 when
# the API server refused the object; a worker's problem keeps the worker's status.
STATUS = {
    "VALIDATION": HTTPStatus.BAD_REQUEST,
    "APP_MISMATCH": HTTPStatus.BAD_REQUEST,
    "APP_NOT_FOUND": HTTPStatus.NOT_FOUND,
    "UNAUTHORIZED": HTTPStatus.UNAUTHORIZED,  # no token, or one the API server does not accept
    "FORBIDDEN": HTTPStatus.FORBIDDEN,  # a known caller whose RBAC does not allow the request's verb
    "SESSION_AMBIGUOUS": HTTPStatus.CONFLICT,  # an id in several namespaces, none named (compat.py)
    "SESSION_NOT_FOUND": HTTPStatus.NOT_FOUND,
    "TASK_NOT_FOUND": HTTPStatus.NOT_FOUND,  # the inference.sh compat routes (compat.py)
    "SESSION_EXPIRED": HTTPStatus.GONE,
    "SESSION_ENDED": HTTPStatus.GONE,
    "PAYLOAD_TOO_LARGE": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "QUEUE_FULL": HTTPStatus.TOO_MANY_REQUESTS,
    "CALL_ALREADY_RAN": HTTPStatus.CONFLICT,  # a call id whose outcome the worker no longer keeps
    "IDEMPOTENCY_KEY_REUSED": HTTPStatus.UNPROCESSABLE_ENTITY,  # one call id, another input
    "CALL_NOT_FOUND": HTTPStatus.NOT_FOUND,  # no call with that id on the worker (yet)
    "CANCELLED": HTTPStatus.CONFLICT,  # a call cancelled before it ran (an inference.sh task)
    "RUN_FAILED": HTTPStatus.INTERNAL_SERVER_ERROR,
    "WORKER_UNAVAILABLE": HTTPStatus.SERVICE_UNAVAILABLE,
    # The worker is saving its state to stop (a call arrived as it began): the gateway wakes
    # the session and makes the call again; a client sees it only if that fails too.
    "SUSPENDING": HTTPStatus.SERVICE_UNAVAILABLE,
    "UPSTREAM_UNAVAILABLE": HTTPStatus.SERVICE_UNAVAILABLE,  # the Kubernetes API server, for now
    "CALL_TIMEOUT": HTTPStatus.GATEWAY_TIMEOUT,
    "INTERNAL": HTTPStatus.INTERNAL_SERVER_ERROR,
}


class Problem(Exception):
    """An error the caller gets as ``application/problem+json``."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        **members: Any,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.status = HTTPStatus(status) if status is not None else STATUS[code]
        self.detail = detail
        self.retry_after = retry_after
        self.members = members  # extension members, e.g. session_id, reason

    def body(self) -> dict[str, Any]:
        return {
            "type": "about:blank",
            "title": self.status.phrase,
            "status": int(self.status),
            "code": self.code,
            "detail": self.detail,
            **self.members,
        }

    def response(self) -> web.Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = "Bearer"
        return web.json_response(
            self.body(), status=int(self.status), content_type=PROBLEM_TYPE, headers=headers
        )


_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_keys(members: dict[str, Any]) -> dict[str, Any]:
    """The worker's camelCase members in the gateway's snake_case: the worker's own contract keeps
    its names (docs/worker-contract.md); every JSON the gateway returns is snake_case."""
    return {_snake(key): value for key, value in members.items()}


@functools.lru_cache(maxsize=1024)
def _snake(key: str) -> str:
    # The worker sends the same few names on every call (its done event's): one regex each, once.
    return _HUMP.sub("_", key).lower()


def from_worker(status: int, body: Any, retry_after: str | None, session_id: str) -> Problem:
    """A worker's problem, passed on with its own code; worker-side auth or readiness trouble is ours."""
    code = body.get("code") if isinstance(body, dict) else None
    detail = str(
        (body.get("detail") if isinstance(body, dict) else None) or f"the worker answered HTTP {status}"
    )
    if code == "SESSION_ENDED":
        return ended("SESSION_ENDED", session_id, "has ended", detail)
    if not isinstance(body, dict) or code in ("UNAUTHORIZED", "NOT_READY") or code not in STATUS:
        return Problem(
            "WORKER_UNAVAILABLE",
            f"the worker of session {session_id} cannot take calls: {detail}",
            session_id=session_id,
        )
    members = snake_keys(
        {k: v for k, v in body.items() if k not in ("type", "title", "status", "code", "detail")}
    )
    seconds = int(retry_after) if retry_after and retry_after.isdigit() else None
    return Problem(code, detail, status=status, retry_after=seconds, session_id=session_id, **members)


UPSTREAM_RETRY_AFTER = 1  # seconds: an API server restarting or overloaded is back soon


@contextlib.contextmanager
def api_server(what: str) -> Iterator[None]:
    """Trouble with the Kubernetes API server while doing ``what`` (it is down, does not answer,
    fails with 5xx or sheds load with 429) as 503 ``UPSTREAM_UNAVAILABLE`` with Retry-After:
    it passes, so the client should try again (it does on 503), not be told the gateway failed.
    Any other answer of the API server stays the caller's to handle."""
    try:
        yield
    except ApiException as err:
        if err.status is None or (err.status != 429 and err.status < 500):
            raise
        after = str(err.headers.get("Retry-After", "")) if err.headers else ""
        raise Problem(
            "UPSTREAM_UNAVAILABLE",
            f"{what}: the Kubernetes API server answered {err.status} ({err.reason})",
            retry_after=int(after) if after.isdigit() else UPSTREAM_RETRY_AFTER,
        ) from err
    except (aiohttp.ClientError, OSError) as err:  # refused, reset, timed out (TimeoutError)
        raise Problem(
            "UPSTREAM_UNAVAILABLE",
            f"{what}: the Kubernetes API server could not be reached ({type(err).__name__}: {err})",
            retry_after=UPSTREAM_RETRY_AFTER,
        ) from err


def not_found(session_id: str, namespace: str) -> Problem:
    return Problem(
        "SESSION_NOT_FOUND",
        f'session not found: no session "{session_id}" in namespace "{namespace}"',
        session_id=session_id,
    )


def ended(code: str, session_id: str, what: str, why: str) -> Problem:
    """410 for a finished session; the text still says "session not found", which SDKs match on."""
    return Problem(code, f"session not found: {session_id} {what} ({why})", session_id=session_id)
