"""How the worker ended: one JSON line for the container's termination message."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

# Kubernetes keeps at most 4096 bytes of the message; leave room for the JSON around it.
_MESSAGE_LIMIT = 3500


class Reason(StrEnum):
    SETUP_FAILED = "SetupFailed"
    CLOSED = "Closed"
    CLOSED_BY_APP = "ClosedByApp"
    IDLE_TIMEOUT = "IdleTimeout"
    TERMINATED = "Terminated"
    CALL_TIMEOUT = "CallTimeout"  # a call's code did not come back even after the call grace
    SUSPENDED = "Suspended"  # the app's state is stored (the message: where, how big, its sha256)
    RESUME_FAILED = "ResumeFailed"  # the saved state could not be restored: no call may run


@dataclass(frozen=True)
class Ending:
    reason: Reason
    message: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.reason in (Reason.SETUP_FAILED, Reason.CALL_TIMEOUT, Reason.RESUME_FAILED) else 0


def write(path: Path, ending: Ending, session_id: str | None) -> None:
    """Best effort: a missing or read-only path must not turn a clean exit into a crash."""
    message = ending.message
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    line = json.dumps({"reason": str(ending.reason), "message": message, "sessionId": session_id})
    try:
        path.write_text(line + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)
