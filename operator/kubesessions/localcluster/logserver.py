"""The process node's one piece of the kubelet API: container logs, for ``kubectl logs``.

The API server answers ``kubectl logs`` by calling the node at
``https://<InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>``
with its kubelet-client certificate. This serves that from the files the pod runners write,
over TLS with a certificate from the cluster's CA, to that certificate only.

Supported: ``follow``, ``tailLines``, ``limitBytes``. The files hold the containers' raw output
(every restart appended), so ``timestamps``, ``sinceSeconds``, ``sinceTime`` and ``previous``
are refused with 400 rather than silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from kubesessions.localcluster.certs import Pair

log = logging.getLogger("kubesessions.processnode")

# The common name of the certificate the API server presents to nodes (--kubelet-client-certificate).
KUBELET_CLIENT = "kube-apiserver-kubelet-client"
UNSUPPORTED = ("timestamps", "sinceSeconds", "sinceTime", "previous")
FOLLOW_POLL_SECONDS = 0.2
CHUNK = 64 * 1024


@dataclass(frozen=True)
class ContainerLog:
    path: Path
    running: Callable[[], bool]  # while true, a follower waits for more output


class LogSource(Protocol):
    def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog | None: ...


@dataclass(frozen=True)
class LogQuery:
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None


class BadQuery(ValueError):
    pass


def parse_query(query: Mapping[str, str]) -> LogQuery:
    """The kubelet's query parameters this node supports; the others named in the error."""
    given = [name for name in UNSUPPORTED if query.get(name, "false") not in ("", "false")]
    if given:
        raise BadQuery(f"the process node does not support {', '.join(given)} for container logs")

    def count(name: str) -> int | None:
        if name not in query:
            return None
        try:
            value = int(query[name])
        except ValueError:
            raise BadQuery(f"{name} must be a whole number >= 0, got {query[name]!r}") from None
        if value < 0:
            raise BadQuery(f"{name} must be a whole number >= 0, got {value}")
        return value

    return LogQuery(
        follow=query.get("follow", "false") == "true",
        tail_lines=count("tailLines"),
        limit_bytes=count("limitBytes"),
    )


def tail_offset(path: Path, lines: int) -> int:
    """Where the last ``lines`` lines of the file start (a last line without newline counts)."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        if lines == 0:
            return end
        pos, newlines = end, 0
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            if pos + step == end and block.endswith(b"\n"):
                block = block[:-1]  # the final newline ends the last line, it starts none
            for i in range(len(block) - 1, -1, -1):
                if block[i] == 0x0A:
                    newlines += 1
                    if newlines == lines:
                        return pos + i + 1
        return 0


class LogServer:
    def __init__(self, source: LogSource, serving: Pair, ca: Path) -> None:
        self.source = source
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
        self.tls.load_cert_chain(serving.cert, serving.key)
        self.tls.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, host: str) -> int:
        """Listen on a port the kernel picks (held from the start, so nothing can take it)."""
        sock = socket.socket()
        sock.bind((host, 0))
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        if _common_name(request) != KUBELET_CLIENT:
            raise web.HTTPForbidden(text=f"only the API server ({KUBELET_CLIENT}) may read logs here\n")
        try:
            query = parse_query(request.query)
        except BadQuery as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        found = self.source.container_log(ns, pod, container)
        if found is None or not found.path.exists():
            raise web.HTTPNotFound(text=f"container {container} of pod {ns}/{pod} has no log on this node\n")
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        await _copy(found, query, response)
        await response.write_eof()
        return response


async def _copy(found: ContainerLog, query: LogQuery, response: web.StreamResponse) -> None:
    start = tail_offset(found.path, query.tail_lines) if query.tail_lines is not None else 0
    left = query.limit_bytes
    with found.path.open("rb") as f:
        f.seek(start)
        while left is None or left > 0:
            # Asked before reading: once the container has ended, this read gets all it wrote.
            more_to_come = query.follow and found.running()
            data = f.read(CHUNK if left is None else min(CHUNK, left))
            if data:
                await response.write(data)
                left = None if left is None else left - len(data)
            elif more_to_come:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
            else:
                return


def _common_name(request: web.Request) -> str | None:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
