"""Logging set-up shared by every kube-sessions process: JSON lines when not on a TTY."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

# Extra attributes a log call may pass (``extra={"session": name}``) that belong in the line.
_FIELDS = ("session", "namespace", "pod", "node")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)  # kopf's lines about one object name it this way
        if isinstance(ref, dict) and ref.get("name"):
            field = "session" if ref.get("kind") == "Session" else str(ref.get("kind") or "object").lower()
            line[field], line["namespace"] = ref["name"], ref.get("namespace")
        for name in _FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


class ExpectedRetries(logging.Filter):
    """kopf logs every retried API request at error level. A 429 it retries is the API server
    asking to come back later (``storage is (re)initializing`` right after CRDs are created):
    expected and recovered from, so a warning. Other failures keep their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.ERROR
            and record.name.startswith("kopf.")
            and "failed; will retry" in (message := record.getMessage())
            and "APITooManyRequestsError" in message
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def setup(level: int = logging.INFO, json_lines: bool | None = None) -> None:
    """Configure the root logger once; ``json_lines`` defaults to 'stderr is not a TTY'."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines if json_lines is not None else not sys.stderr.isatty():
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(ExpectedRetries())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
