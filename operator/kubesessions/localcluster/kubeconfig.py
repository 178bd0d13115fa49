"""Kubeconfig files for the local cluster, and TLS contexts built from them."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .certs import Pair


def build_kubeconfig(server: str, ca: Path, user: Pair, name: str = "kube-sessions-local") -> dict[str, Any]:
    """A kubeconfig with the CA and client certificate embedded, so it can be copied."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": b64(user.cert),
                    "client-key-data": b64(user.key),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


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
