"""kube-sessions worker runtime: hosts one session's app, one call at a time."""

from .session import end_session, function

__all__ = ["end_session", "function"]
