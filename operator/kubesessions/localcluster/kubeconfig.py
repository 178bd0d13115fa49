"""Kubeconfig files for the local cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from kubesessions.localcluster.certs import Pair


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
