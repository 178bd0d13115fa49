"""What an app may ask of the runtime from inside ``run``: kept free of heavy imports,
because every app imports it (``from kubesessions_worker import end_session``)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass
class CallScope:
    """Per-call requests from the app, read by the runner when the call returns."""

    end_requested: bool = False


# A context variable reaches the app on the event loop and on the app's thread alike
# (the runner copies the context into every step it hands to that thread).
current_call: ContextVar[CallScope | None] = ContextVar("kubesessions_call", default=None)


F = TypeVar("F", bound=Callable[..., Any])
FUNCTION_MARK = "__kubesessions_function__"


def function(method: F) -> F:
    """Expose a method of the app class as a function callers can name (``run`` always is):
    ``POST /run {"function": "<name>", "input": ...}``."""
    setattr(method, FUNCTION_MARK, True)
    return method


def end_session() -> None:
    """End this session once the running call has returned.

    The caller gets its reply with ``sessionClosed: true``; then the app's ``close()`` runs
    and the worker exits (termination reason ``ClosedByApp``).
    """
    scope = current_call.get()
    if scope is None:
        raise RuntimeError("end_session() can only be called while run() is handling a call")
    scope.end_requested = True
