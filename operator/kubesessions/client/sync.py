"""The blocking client (standard library HTTP, one kept-alive connection per thread and URL)."""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from kubesessions.client import _core
from kubesessions.client._core import Base, Call, StreamState


def _open(conn: http.client.HTTPConnection, read_timeout: float) -> None:
    conn.connect()  # under the connection's own timeout, the shorter connect limit
    conn.sock.settimeout(read_timeout)


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection is unusable: readable means the peer closed it
    (or sent something unasked), either way no request may go on it."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class _Connections(threading.local):
    def __init__(self) -> None:
        self.by_url: dict[str, http.client.HTTPConnection] = {}


class Client(Base):
    """Sessions over the gateway. ``run(params)`` takes and returns the reference's dict shape.

    >>> client = Client("http://gateway:8000", token="...")
    >>> result = client.run({"app": "counter", "input": {"add": 1}, "session": "new"})
    >>> client.run({"app": "counter", "input": {"add": 1}, "session": result["session_id"]})
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = _Connections()

    def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """One call: ``{"session_id", "output", ...}``; raises a :class:`KubeSessionsError` subclass."""
        result: dict[str, Any] = self._json(_core.run_call(params, stream=False))
        return result

    def stream(self, params: Mapping[str, Any]) -> Stream:
        """The outputs of one call as the app yields them (``.session_id`` once the first arrives)."""
        return Stream(self, _core.run_call(params, stream=True))

    def create_session(
        self, app: str, session_timeout: int | None = None, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start a session without a call; returns once it is Ready."""
        result: dict[str, Any] = self._json(_core.create_call(app, session_timeout, config))
        return result

    def get_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(_core.get_call(session_id))
        return result

    def list_sessions(self, app: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(_core.list_call(app))["sessions"]
        return result

    def close_session(self, session_id: str) -> None:
        self._json(_core.close_call(session_id))

    def keepalive(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(_core.keepalive_call(session_id))
        return result

    def suspend(self, session_id: str) -> dict[str, Any]:
        """Ask for the session to be suspended once no call runs (its App must have suspend
        enabled): its app saves its state and its worker stops. The session as it stands now."""
        result: dict[str, Any] = self._json(_core.suspend_call(session_id))
        return result

    def resume(self, session_id: str) -> dict[str, Any]:
        """Ask for a suspended session to be resumed (a call resumes it too, and waits for it)."""
        result: dict[str, Any] = self._json(_core.resume_call(session_id))
        return result

    @contextlib.contextmanager
    def session(
        self, app: str, session_timeout: int | None = None, config: dict[str, Any] | None = None
    ) -> Iterator[Session]:
        """A session (idle timeout ``session_timeout`` seconds) that is closed when the block ends,
        however it ends."""
        info = self.create_session(app, session_timeout, config)
        session = Session(self, app, info["session_id"])
        try:
            yield session
        finally:
            session.close()

    def close(self) -> None:
        for conn in self._local.by_url.values():
            conn.close()
        self._local.by_url.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _json(self, call: Call) -> Any:
        _, status, headers, body = self._send(call, lambda resp: resp.read())
        return _core.answer(status, body, headers.get("Retry-After"))

    def _send(self, call: Call, read: Any) -> tuple[str, int, http.client.HTTPMessage, Any]:
        """Send with fail-over and (for safe calls) retries; ``read(response)`` takes the body.
        The URL that answered comes first."""
        attempts = self.attempts(call)
        for pause, url in attempts:
            time.sleep(pause)
            try:
                conn = self._connection(url)
            except OSError as exc:  # refused, unknown host, connect timeout: nothing was sent
                attempts.not_sent(url, exc)
                continue
            try:
                conn.request(call.method, call.target(), body=call.encoded(), headers=self.headers(call))
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:  # a read timeout included
                conn.close()
                attempts.broken(url, exc)
                continue
            if attempts.again(resp.status):
                resp.read()
                continue
            self.endpoints.good(url)
            return url, resp.status, resp.headers, read(resp)
        raise attempts.exhausted() from attempts.last

    def _connection(self, url: str) -> http.client.HTTPConnection:
        """This thread's connection to ``url``, connected; a kept-alive one the gateway has
        closed meanwhile is replaced before anything is written to it."""
        conn = self._local.by_url.get(url)
        if conn is None:
            parts = urlsplit(url)
            factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = self._local.by_url[url] = factory(parts.netloc, timeout=_core.CONNECT_TIMEOUT)
        elif conn.sock is not None and _dropped(conn.sock):
            conn.close()
        if conn.sock is None:
            _open(conn, self.request_timeout)
        return conn


class Stream(StreamState):
    """Iterate for the outputs; ``session_id`` and ``done`` are set as the events arrive."""

    def __init__(self, client: Client, call: Call) -> None:
        super().__init__(call, client)
        self.client = client

    def __iter__(self) -> Iterator[Any]:
        while True:
            url, status, headers, resp = self.client._send(self.call, lambda r: r)
            if status != 200:
                _core.answer(status, resp.read(), headers.get("Retry-After"))
            try:
                for line in resp:
                    yield from self.fresh(self.events.feed(line))
            except (OSError, http.client.HTTPException) as exc:
                self.cut(url, exc)
                continue
            if self.done is not None:
                return
            self.cut(url, None)


class Session:
    """One session's handle: calls go to its warm worker; ``close()`` ends it."""

    def __init__(self, client: Client, app: str, session_id: str) -> None:
        self.client, self.app, self.id = client, app, session_id

    def run(self, input: Any) -> dict[str, Any]:
        """One call on this session: ``{"session_id", "output", ...}``, as :meth:`Client.run`."""
        return self.client.run({"app": self.app, "input": input, "session": self.id})

    def stream(self, input: Any) -> Stream:
        return self.client.stream({"app": self.app, "input": input, "session": self.id})

    def keepalive(self) -> dict[str, Any]:
        return self.client.keepalive(self.id)

    def suspend(self) -> dict[str, Any]:
        return self.client.suspend(self.id)

    def resume(self) -> dict[str, Any]:
        return self.client.resume(self.id)

    def info(self) -> dict[str, Any]:
        return self.client.get_session(self.id)

    def close(self) -> None:
        self.client.close_session(self.id)
