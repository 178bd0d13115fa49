"""The baseline of bench/kube_clients.py: a bare Kubernetes REST client on aiohttp (JSON in and
out, certificate auth from a local-cluster kubeconfig), as the process node had before the
operator side moved onto kubernetes_asyncio. Only the benchmark uses it."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kubesessions.api.names import JSON


@dataclass(frozen=True)
class Connection:
    """What a client needs from a certificate kubeconfig: the server and a TLS context."""

    server: str
    ssl: ssl.SSLContext


def connection_from_kubeconfig(path: Path) -> Connection:
    """Read a kubeconfig written by :func:`build_kubeconfig` (certificate auth only)."""
    config = yaml.safe_load(path.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    # ssl can only load a client certificate from files; the state dir keeps them beside.
    cert_dir = path.parent / f".{path.stem}-tls"
    cert_dir.mkdir(mode=0o700, exist_ok=True)
    cert, key = cert_dir / "client.crt", cert_dir / "client.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    ctx.load_cert_chain(cert, key)
    return Connection(server=cluster["server"], ssl=ctx)


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


class ApiClient:
    def __init__(self, connection: Connection) -> None:
        self.server = connection.server
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=connection.ssl, limit=32),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> JSON:
        data = None if body is None else json.dumps(body)
        async with self._session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, method, path, text)
            result: JSON = json.loads(text) if text else {}
            return result

    async def get(self, path: str, **params: str) -> JSON:
        return await self.request("GET", path, params=params or None)
