"""Python client of the kube-sessions gateway: ``Client``, ``AsyncClient`` and typed errors.

>>> from kubesessions.client import Client
>>> client = Client("http://localhost:8000", token="...")   # in a pod: Client() finds both
>>> result = client.run({"app": "counter", "input": {"add": 1}, "session": "new", "session_timeout": 300})
>>> with client.session("counter", session_timeout=300) as session:
...     session.run({"add": 2})

Installed without any extra: of this distribution it imports only ``api.names``.
"""

from kubesessions.client._core import Retry
from kubesessions.client.aio import AsyncClient, AsyncSession, AsyncStream
from kubesessions.client.errors import (
    AppMismatch,
    AppNotFound,
    CallTimeout,
    Forbidden,
    GatewayUnavailable,
    InvalidRequest,
    KubeSessionsError,
    OutcomeUnknown,
    PayloadTooLarge,
    QueueFull,
    RunFailed,
    SessionEnded,
    SessionExpired,
    SessionNotFound,
    Unauthorized,
    UpstreamUnavailable,
    WorkerUnavailable,
)
from kubesessions.client.recovering import AsyncRecoveringSession, RecoveringSession
from kubesessions.client.sync import Client, Session, Stream
from kubesessions.client.tokens import ServiceAccountToken, TokenProvider

__all__ = [
    "AppMismatch",
    "AppNotFound",
    "AsyncClient",
    "AsyncRecoveringSession",
    "AsyncSession",
    "AsyncStream",
    "CallTimeout",
    "Client",
    "Forbidden",
    "GatewayUnavailable",
    "InvalidRequest",
    "KubeSessionsError",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "QueueFull",
    "RecoveringSession",
    "Retry",
    "RunFailed",
    "ServiceAccountToken",
    "Session",
    "SessionEnded",
    "SessionExpired",
    "SessionNotFound",
    "Stream",
    "TokenProvider",
    "Unauthorized",
    "UpstreamUnavailable",
    "WorkerUnavailable",
]
