"""The worker's errors as RFC 9457 problem details, each with a stable ``code``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from kubesessions.api import names

# code -> HTTP status; the table in docs/worker-contract.md.
STATUS = {
    "UNAUTHORIZED": HTTPStatus.UNAUTHORIZED,
    "VALIDATION": HTTPStatus.BAD_REQUEST,
    "PAYLOAD_TOO_LARGE": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "QUEUE_FULL": HTTPStatus.TOO_MANY_REQUESTS,
    "NOT_READY": HTTPStatus.SERVICE_UNAVAILABLE,
    "CLAIMED": HTTPStatus.CONFLICT,
    "SESSION_ENDED": HTTPStatus.GONE,
    "RUN_FAILED": HTTPStatus.INTERNAL_SERVER_ERROR,
    "CALL_TIMEOUT": HTTPStatus.GATEWAY_TIMEOUT,
    "IDEMPOTENCY_KEY_REUSED": HTTPStatus.UNPROCESSABLE_ENTITY,
    "CALL_ALREADY_RAN": HTTPStatus.CONFLICT,
    "CALL_NOT_FOUND": HTTPStatus.NOT_FOUND,
    "CANCELLED": HTTPStatus.CONFLICT,
    names.BUSY: HTTPStatus.CONFLICT,
    names.SUSPENDING: HTTPStatus.CONFLICT,
    names.NOT_SUSPENDABLE: HTTPStatus.CONFLICT,
    names.RESUME_REFUSED: HTTPStatus.CONFLICT,
    names.STATE_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    names.STATE_CORRUPT: HTTPStatus.UNPROCESSABLE_ENTITY,
    names.SUSPEND_FAILED: HTTPStatus.INTERNAL_SERVER_ERROR,
    names.RESUME_FAILED: HTTPStatus.INTERNAL_SERVER_ERROR,
}


class Problem(Exception):
    """An error the client gets as ``application/problem+json`` (or an SSE ``error`` event)."""

    def __init__(self, code: str, detail: str, *, retry_after: int | None = None, **members: Any) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.status = STATUS[code]
        self.detail = detail
        self.retry_after = retry_after
        self.members = members  # extension members, e.g. errorType for RUN_FAILED

    def body(self) -> dict[str, Any]:
        # "about:blank" types take the HTTP status phrase as their title (RFC 9457 §4.2.1).
        return {
            "type": "about:blank",
            "title": self.status.phrase,
            "status": int(self.status),
            "code": self.code,
            "detail": self.detail,
            **self.members,
        }
