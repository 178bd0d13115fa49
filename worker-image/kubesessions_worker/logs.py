"""Logging for the worker process: JSON lines when stderr is not a TTY.

The worker image ships without the ``kubesessions`` package, so this mirrors its format
(time, level, logger, message, session) instead of importing it.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any


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
        if session := getattr(record, "session", None):
            line["session"] = session
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


class SessionFilter(logging.Filter):
    """Tag every record with the session: the whole process, the app's own logs included,
    is about that one session."""

    def __init__(self, session: str) -> None:
        super().__init__()
        self.session = session

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session"):
            record.session = self.session
        return True


def setup(session: str, level: str = "INFO", json_lines: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines if json_lines is not None else not sys.stderr.isatty():
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(session)s]: %(message)s")
        )
    handler.addFilter(SessionFilter(session))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
