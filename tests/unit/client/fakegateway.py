"""A fake gateway for the client's tests: sessions of a counter app, and knobs to make it fail."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web

from kubesessions.client import Retry

FAST = Retry(attempts=3, backoff=0.001, max_backoff=0.002)


def problem(status: int, code: str, detail: str, **headers: str) -> web.Response:
    body = {"type": "about:blank", "status": status, "code": code, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json", headers=headers)


class FakeGateway:
    """Just enough of the gateway: sessions of a counter app, and knobs to make it fail."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.expired: set[str] = set()
        self.unavailable_gets = 0  # answer this many GETs with 503 first
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.created: list[dict[str, Any]] = []  # the bodies of POST /v1/sessions
        self.app = web.Application()
        self.app.router.add_post("/v1/run", self.run)
        self.app.router.add_post("/v1/sessions", self.create)
        self.app.router.add_get("/v1/sessions/{id}", self.get)
        self.app.router.add_delete("/v1/sessions/{id}", self.delete)

    def _new(self) -> str:
        sid = f"s-{len(self.totals)}"
        self.totals[sid] = 0
        return sid

    async def run(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(("run", request.headers.get("Authorization", ""), dict(request.headers)))
        if request.headers.get("Authorization") != "Bearer t":
            return problem(401, "UNAUTHORIZED", "a bearer token is required")
        if body.get("app") == "forbidden":
            return problem(403, "UNAUTHORIZED", "me may not create sessions")
        sid = self._new() if body.get("session") in (None, "new") else body["session"]
        if sid in self.expired:
            return problem(410, "SESSION_EXPIRED", f"session not found: {sid} has expired")
        if sid not in self.totals:
            return problem(404, "SESSION_NOT_FOUND", f"session not found: {sid}")
        if body.get("app") != "counter":
            return problem(400, "APP_MISMATCH", f'session {sid} runs app "counter"')
        if body["input"] == "full":
            return problem(429, "QUEUE_FULL", "queue full", **{"Retry-After": "3"})
        if body["input"] == "boom":
            return problem(500, "RUN_FAILED", "ValueError: boom")
        self.totals[sid] += int(body["input"].get("add", 1))
        if not body.get("stream"):
            return web.json_response(
                {"session_id": sid, "output": {"total": self.totals[sid]}, "session_closed": False}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f'event: session\ndata: {{"session_id": "{sid}"}}\n\n'.encode())
        for word in ("a", "b"):
            await response.write(f'event: output\ndata: "{word}"\n\n'.encode())
        await response.write(b'event: done\ndata: {"session_closed": false, "duration_ms": 1}\n\n')
        return response

    async def create(self, request: web.Request) -> web.Response:
        self.created.append(await request.json())
        return web.json_response({"session_id": self._new(), "phase": "Ready"}, status=201)

    async def get(self, request: web.Request) -> web.Response:
        if self.unavailable_gets:
            self.unavailable_gets -= 1
            return problem(503, "WORKER_UNAVAILABLE", "try again")
        sid = request.match_info["id"]
        return web.json_response(
            {"session_id": sid, "phase": "Closed" if sid not in self.totals else "Ready"}
        )

    async def delete(self, request: web.Request) -> web.Response:
        self.totals.pop(request.match_info["id"], None)
        return web.Response(status=204)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
