"""Typed errors of the sessions API, made from the gateway's problem+json answers."""

from __future__ import annotations

import contextlib
from typing import Any


class KubeSessionsError(Exception):
    """Any error the gateway answered, or the gateway could not be reached."""

    def __init__(
        self, detail: str, *, status: int = 0, code: str = "", problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail, self.status, self.code = detail, status, code
        self.problem = problem or {}

    @property
    def session_id(self) -> str | None:
        value = self.problem.get("session_id")
        return str(value) if value is not None else None


class InvalidRequest(KubeSessionsError):
    """The request was refused as malformed (VALIDATION)."""


class PayloadTooLarge(InvalidRequest):
    """The body is over the gateway's limit."""


class AppMismatch(InvalidRequest):
    """The session runs a different app than the call names."""


class AppNotFound(KubeSessionsError):
    """No App of that name in the namespace."""


class Unauthorized(KubeSessionsError):
    """No token, or the token was not accepted (401)."""


class Forbidden(Unauthorized):
    """The token is good, but may not use sessions in this namespace (403)."""


class SessionNotFound(KubeSessionsError):
    """No such session: never existed, or finished (the text says "session not found")."""


class SessionExpired(SessionNotFound):
    """The session ended after being idle past its timeout (or its max lifetime)."""


class SessionEnded(SessionNotFound):
    """The session was closed (by a client or by its app) or its worker failed."""


class QueueFull(KubeSessionsError):
    """The session's worker has too many calls waiting; try again after ``retry_after`` seconds."""

    @property
    def retry_after(self) -> float | None:
        value = self.problem.get("retry_after")
        return float(value) if value is not None else None


class RunFailed(KubeSessionsError):
    """The app's ``run`` raised; ``error_type`` names the exception."""

    @property
    def error_type(self) -> str | None:
        value = self.problem.get("error_type")
        return str(value) if value is not None else None


class CallTimeout(KubeSessionsError):
    """The call ran past its deadline."""


class WorkerUnavailable(KubeSessionsError):
    """The session's worker cannot take calls (starting, gone, or could not start)."""


class UpstreamUnavailable(KubeSessionsError):
    """The gateway could not reach the Kubernetes API server (restarting, overloaded): passing,
    so it was retried like every 503 before it came to you."""


class GatewayUnavailable(KubeSessionsError):
    """None of the gateway URLs answered."""


class OutcomeUnknown(GatewayUnavailable):
    """The request was sent but no answer came back (a read timeout, a dropped connection):
    the call may have run. It is not sent again, because running it twice could repeat its
    effect on the session; look at the session's state before deciding to call again."""


BY_CODE: dict[str, type[KubeSessionsError]] = {
    "VALIDATION": InvalidRequest,
    "PAYLOAD_TOO_LARGE": PayloadTooLarge,
    "APP_MISMATCH": AppMismatch,
    "APP_NOT_FOUND": AppNotFound,
    "SESSION_NOT_FOUND": SessionNotFound,
    "SESSION_EXPIRED": SessionExpired,
    "SESSION_ENDED": SessionEnded,
    "QUEUE_FULL": QueueFull,
    "RUN_FAILED": RunFailed,
    "CALL_TIMEOUT": CallTimeout,
    "WORKER_UNAVAILABLE": WorkerUnavailable,
    "UPSTREAM_UNAVAILABLE": UpstreamUnavailable,
    "FORBIDDEN": Forbidden,
}


def from_problem(status: int, body: Any, retry_after: str | None = None) -> KubeSessionsError:
    """The typed error for a problem+json body (or whatever a proxy on the way answered)."""
    problem: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    code = str(problem.get("code") or "")
    detail = str(problem.get("detail") or problem.get("title") or f"the gateway answered HTTP {status}")
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            problem["retry_after"] = float(retry_after)
    if code == "UNAUTHORIZED" or status in (401, 403):
        kind: type[KubeSessionsError] = Forbidden if status == 403 else Unauthorized
    else:
        kind = BY_CODE.get(code) or (WorkerUnavailable if status in (502, 503) else KubeSessionsError)
    return kind(detail, status=status, code=code, problem=problem)
