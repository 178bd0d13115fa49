"""Logging for the worker process: JSON lines when stderr is not a TTY, in the format of every
kube-sessions process (:class:`kubesessions.common.logs.JsonFormatter`), each line naming the
worker's session."""

from __future__ import annotations

import logging
import sys

from kubesessions.common.logs import JsonFormatter


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
