"""What the blocking and the asyncio client share: endpoints, retries, requests, answers, SSE."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubesessions.api.names import CALL_ID_HEADER
from kubesessions.client.errors import GatewayUnavailable, KubeSessionsError, OutcomeUnknown, from_problem
from kubesessions.client.tokens import TokenProvider, resolve

# The gateway's Service as the Helm chart names it for the README's install (release
# kube-sessions in namespace kube-sessions); KUBESESSIONS_URL (comma-separated) overrides.
IN_CLUSTER_URL = "http://kube-sessions-gateway.kube-sessions.svc"
NAMESPACE_HEADER = "X-Kubesessions-Namespace"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Seconds to open a connection; failing that, nothing was sent and the next URL may be tried.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Retry:
    """Backoff for safe calls on 502/503/504 and lost connections, through every gateway URL.

    Safe are reads, keepalive and close, and every call with a call id (``Idempotency-Key``:
    runs, streams, session starts), which the gateway and the worker carry out at most once
    however often it arrives. A connection that could not be made (refused, unknown host,
    connect timeout) is always tried on the next URL: nothing was sent. Once the request may
    have left, only safe calls are sent again; any other raises :class:`OutcomeUnknown`.
    """

    attempts: int = 4
    backoff: float = 0.1  # seconds before the second attempt; doubles, with jitter
    max_backoff: float = 2.0
    # Told why, each time a call is sent again ("ConnectionResetError", "HTTP 503"): for the
    # caller's logs or metrics (the fault suite counts the calls a fault cut this way).
    on_retry: Callable[[str], None] | None = field(default=None, compare=False)

    def pause(self, attempt: int) -> float:
        if attempt == 0:
            return 0.0
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)  # noqa: S311 - jitter, not secrecy


class Endpoints:
    """Gateway URLs in fail-over order: the last one that answered first."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one gateway URL is needed")
        self.urls = [u.rstrip("/") for u in urls]
        self._down_until: dict[str, float] = {}

    def order(self) -> list[str]:
        now = time.monotonic()
        return sorted(self.urls, key=lambda u: self._down_until.get(u, 0.0) > now)

    def good(self, url: str) -> None:
        self._down_until.pop(url, None)
        # One assignment, not remove + insert: threads sharing a client may call this at once.
        self.urls = [url, *(u for u in self.urls if u != url)]

    def bad(self, url: str, for_seconds: float = 5.0) -> None:
        self._down_until[url] = time.monotonic() + for_seconds


@dataclass
class Call:
    """One API request, before it is sent."""

    method: str
    path: str
    body: Any = None
    safe: bool = False  # may be sent again when the first try's fate is unknown
    stream: bool = False
    query: dict[str, str] = field(default_factory=dict)
    key: str | None = None  # the call id (Idempotency-Key): one per logical call, kept on every try

    def encoded(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body).encode()

    def target(self) -> str:
        if not self.query:
            return self.path
        from urllib.parse import urlencode

        return f"{self.path}?{urlencode(self.query)}"


def run_call(params: Mapping[str, Any], stream: bool) -> Call:
    """``/v1/run`` with the reference's parameters: app, input, session, session_timeout (and config)."""
    if "input" not in params:
        raise ValueError('run() needs params["input"]')
    if "stream" in params and bool(params["stream"]) != stream:
        raise ValueError(
            'run() returns the whole output and cannot stream: for {"stream": true} use '
            "client.stream(params), which yields the outputs as they come"
            if params["stream"]
            else 'client.stream() always streams: leave out "stream" (or use client.run for one answer)'
        )
    body = {k: v for k, v in params.items() if v is not None}
    body["stream"] = stream
    # The call id makes it safe to send again: the worker runs an id at most once (a repeat gets
    # the recorded outcome or joins the running call), and a new session's name is derived from it.
    return Call("POST", "/v1/run", body, safe=True, stream=stream, key=uuid.uuid4().hex)


class Base:
    """Settings and request preparation common to :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        token: str | TokenProvider | None = None,
        namespace: str | None = None,
        request_timeout: float = 660.0,
        retry: Retry | None = None,
    ) -> None:
        if url is None:
            url = os.environ.get("KUBESESSIONS_URL", IN_CLUSTER_URL).split(",")
        self.endpoints = Endpoints([url] if isinstance(url, str) else list(url))
        self.token = resolve(token)
        self.namespace = namespace or os.environ.get("KUBESESSIONS_NAMESPACE") or _pod_namespace()
        # Seconds to wait for each read of an answer: above the gateway's own call timeout.
        self.request_timeout = request_timeout
        self.retry = retry or Retry()

    def headers(self, call: Call) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if call.stream else "application/json"}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.namespace:
            headers[NAMESPACE_HEADER] = self.namespace
        if call.key:
            headers[CALL_ID_HEADER] = call.key
        return headers

    def attempts(self, call: Call) -> Attempts:
        return Attempts(self.endpoints, self.retry, call)


class Attempts:
    """One call's way through the gateways: the fail-over and retry decisions both transports
    share, so that each only sends and reads."""

    def __init__(self, endpoints: Endpoints, retry: Retry, call: Call) -> None:
        self.endpoints, self.retry, self.call = endpoints, retry, call
        self.attempt = 0
        self.last: Exception | None = None

    def __iter__(self) -> Iterator[tuple[float, str]]:
        """(seconds to pause, url) in turn; each attempt walks the URLs in fail-over order."""
        for attempt in range(self.retry.attempts if self.call.safe else 1):
            self.attempt = attempt
            for url in self.endpoints.order():
                yield self.retry.pause(attempt), url

    def not_sent(self, url: str, exc: Exception) -> None:
        """Nothing reached ``url``: the next gateway may take the call, safe or not."""
        self.last = exc
        self.endpoints.bad(url)

    def broken(self, url: str, exc: Exception) -> None:
        """The request may have reached ``url``: only a safe call may be sent again (it goes
        to the other URLs first)."""
        self.last = exc
        self.endpoints.bad(url)
        if self.call.safe:
            self._retrying(type(exc).__name__)
        else:
            raise OutcomeUnknown(
                f"{self.call.method} {self.call.path} may have run: it was sent to {url} but no answer "
                f"came back ({type(exc).__name__}: {exc}). It was not sent again, because running it "
                "twice could repeat its effect on the session; look at the session before calling again."
            ) from exc

    def again(self, status: int) -> bool:
        """Whether to drop this answer and try again (a safe call, a passing failure)."""
        if self.call.safe and retryable(status) and self.attempt + 1 < self.retry.attempts:
            self.last = KubeSessionsError(f"HTTP {status}", status=status)
            self._retrying(f"HTTP {status}")
            return True
        return False

    def _retrying(self, why: str) -> None:
        if self.retry.on_retry is not None:
            self.retry.on_retry(why)

    def exhausted(self) -> GatewayUnavailable:
        return GatewayUnavailable(f"no gateway answered ({', '.join(self.endpoints.urls)}): {self.last}")


def answer(status: int, body: bytes, retry_after: str | None) -> Any:
    """The JSON of a 2xx answer; the typed error of any other."""
    if 200 <= status < 300:
        return json.loads(body) if body else None
    try:
        problem = json.loads(body)
    except ValueError:
        problem = {"detail": body.decode(errors="replace")[:500] or f"HTTP {status}"}
    raise from_problem(status, problem, retry_after)


def retryable(status: int) -> bool:
    return status in (502, 503, 504)


class Events:
    """Turns SSE lines into outputs; remembers the session id and the end (done or error)."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.done: dict[str, Any] | None = None
        self._event, self._data = "message", ""

    def feed(self, raw: bytes) -> list[Any]:
        """Outputs completed by one line; raises the typed error of an ``error`` event."""
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            self._event = line[6:].strip()
            return []
        if line.startswith("data:"):
            chunk = line[5:].removeprefix(" ")
            self._data = f"{self._data}\n{chunk}" if self._data else chunk
            return []
        if line or not self._data:
            return []
        event, data = self._event, json.loads(self._data)
        self._event, self._data = "message", ""
        if event == "session":
            self.session_id = data["session_id"]
        elif event == "done":
            self.done = data
        elif event == "error":
            error = from_problem(int(data.get("status", 500)), data)
            error.problem.setdefault("session_id", self.session_id)
            raise error
        elif event == "output":
            return [data]
        return []


def _pod_namespace() -> str | None:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or None
    except OSError:
        return None


def session_path(session_id: str) -> str:
    from urllib.parse import quote

    return f"/v1/sessions/{quote(session_id, safe='')}"


def create_call(app: str, session_timeout: int | None, config: dict[str, Any] | None) -> Call:
    body: dict[str, Any] = {"app": app}
    if session_timeout is not None:
        body["session_timeout"] = session_timeout
    if config is not None:
        body["config"] = config
    # The gateway names the session after the call id, so a retry finds it rather than start another.
    return Call("POST", "/v1/sessions", body, safe=True, key=uuid.uuid4().hex)


def list_call(app: str | None) -> Call:
    return Call("GET", "/v1/sessions", safe=True, query={"app": app} if app else {})


def get_call(session_id: str) -> Call:
    return Call("GET", session_path(session_id), safe=True)


def close_call(session_id: str) -> Call:
    return Call("DELETE", session_path(session_id), safe=True)


def keepalive_call(session_id: str) -> Call:
    return Call("POST", session_path(session_id) + "/keepalive", safe=True)


def suspend_call(session_id: str) -> Call:
    """Ask for the session to be suspended (setting the request again changes nothing: safe)."""
    return Call("POST", session_path(session_id) + "/suspend", safe=True)


def resume_call(session_id: str) -> Call:
    return Call("POST", session_path(session_id) + "/resume", safe=True)


class StreamState:
    """What the sync and async streams share: the call, what its events said so far, and
    resuming a stream cut before its end.

    A cut stream is sent again with its call id: the worker answers a repeat with the call's
    events from the first (recorded, or still coming), so the outputs already handed out are
    skipped and the caller sees each output once, in order.
    """

    def __init__(self, call: Call, base: Base) -> None:
        self.call, self.retry, self.endpoints = call, base.retry, base.endpoints
        self.events = Events()
        self._handed = 0  # outputs handed to the caller
        self._skip = 0  # outputs of a resumed stream that were handed out before the cut
        self._cuts = 0

    def fresh(self, outputs: list[Any]) -> list[Any]:
        """The outputs not handed out yet."""
        skipped = min(self._skip, len(outputs))
        self._skip -= skipped
        self._handed += len(outputs) - skipped
        return outputs[skipped:]

    def cut(self, url: str, exc: BaseException | None) -> None:
        """The stream from ``url`` broke off before its end (``exc``, or no end event): read it
        again (from the other URLs first), or raise."""
        self._cuts += 1
        self.endpoints.bad(url)
        if not self.call.safe or self._cuts >= self.retry.attempts:
            raise GatewayUnavailable(
                f"the stream broke off before the call finished ({self._cuts} times; "
                f"{type(exc).__name__ if exc else 'no end event'}: {exc or ''})",
                problem={"session_id": self.session_id},
            ) from exc
        self.events, self._skip = Events(), self._handed

    @property
    def session_id(self) -> str | None:
        return self.events.session_id

    @property
    def done(self) -> dict[str, Any] | None:
        return self.events.done
